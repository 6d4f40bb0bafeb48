/*
 * The service manager's readiness protocol (sd_notify), written by hand: one
 * datagram to the unix socket named by $NOTIFY_SOCKET, no libsystemd. Without
 * $NOTIFY_SOCKET (not under systemd) every call does nothing.
 */
#ifndef PF_NOTIFY_H
#define PF_NOTIFY_H

/* Send state ("READY=1", "STOPPING=1", ...): 0, or -errno (nothing is logged). */
int pf_notify(const char *state);

/* "RELOADING=1" with the MONOTONIC_USEC a notify-reload service manager wants. */
int pf_notify_reloading(void);

#endif /* PF_NOTIFY_H */
