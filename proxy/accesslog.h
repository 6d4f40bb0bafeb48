/*
 * The access log line of a transaction. Worker thread.
 */
#ifndef PF_ACCESSLOG_H
#define PF_ACCESSLOG_H

struct pf_tx;

/*
 * One JSON line for tx into its worker's log buffer, handed to the log
 * writer once the buffer is big enough (the 100 ms tick flushes the rest).
 */
void pf_accesslog_write(struct pf_tx *tx);

#endif /* PF_ACCESSLOG_H */
