/*
 * Client connection helpers that do no I/O: the state dump for debug logs.
 */
#include "proxy/http1.h"

#include <stdio.h>

#include <event2/buffer.h>

#include "proxy/stream.h"
#include "proxy/tx-t.h"

static const char *const state_names[] = {
    [PF_CONN_READING_HEAD] = "READING_HEAD", [PF_CONN_READING_BODY] = "READING_BODY",
    [PF_CONN_BODY_PAUSED] = "BODY_PAUSED",   [PF_CONN_WAITING] = "WAITING",
    [PF_CONN_LINGERING] = "LINGERING",       [PF_CONN_DEAD] = "DEAD",
};

const char *pf_conn_state_name(enum pf_conn_state st)
{
    return (unsigned)st < sizeof(state_names) / sizeof(state_names[0]) ? state_names[st] : "?";
}

static size_t buf_len(const struct evbuffer *b)
{
    return b != NULL ? evbuffer_get_length(b) : 0;
}

size_t pf_conn_dump(const struct pf_conn *c, char *buf, size_t size)
{
    static const char *const body_names[] = {"none", "length", "chunked", "close"};
    int n;

    n = snprintf(buf, size,
                 "state=%s flags=%s%s%s%s%s busy=%u tx=%s body=%s left=%llu head=%u in=%zu "
                 "out=%zu",
                 pf_conn_state_name(c->state), c->closing ? "closing," : "",
                 c->linger ? "linger," : "", c->read_blocked ? "read_blocked," : "",
                 c->processing ? "processing," : "", c->is_admin ? "admin," : "", c->busy,
                 c->tx != NULL ? "yes" : "no", c->body_mode < 4 ? body_names[c->body_mode] : "?",
                 (unsigned long long)c->body_left, c->head_bytes,
                 c->s != NULL ? buf_len(c->s->in) : 0, c->s != NULL ? buf_len(c->s->out) : 0);
    if (n < 0)
        return 0;
    return (size_t)n < size ? (size_t)n : size > 0 ? size - 1 : 0;
}
