/*
 * Internal types of the core, for the files that want them all: each lives in
 * its module's -t.h (the upstream side in proxy/upstream/upconn-t.h).
 * Filters never include this file (they see proxy/filter.h).
 *
 * Ownership, per worker thread (nothing here is touched by another thread,
 * except the mailbox, which has its own lock):
 *   pf_worker owns its pf_conns, its upstream pools and its pf_wconfs.
 *   pf_conn owns at most one pf_tx at a time.
 *   pf_tx owns its arena; everything per-request lives in it.
 *   pf_upconn is owned by its pool while idle and by its tx while busy.
 */
#ifndef PF_CORE_H
#define PF_CORE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include <event2/event.h>
#include <event2/event_struct.h>
#include <http_parser.h>

#include "proxy/chunked.h"
#include "proxy/conf.h"
#include "proxy/conn-t.h"
#include "proxy/errors-t.h"
#include "proxy/filter.h"
#include "proxy/hdrs-t.h"
#include "proxy/head-t.h"
#include "proxy/stream.h"
#include "proxy/tx-t.h"
#include "proxy/worker-t.h"

struct bufferevent;
struct evconnlistener;

struct pf_pool;
struct pf_upconn;

#include "proxy/upstream/upconn-t.h" /* upstream connection types */

#endif /* PF_CORE_H */
