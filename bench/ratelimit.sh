#!/bin/sh
# ns per rate-limit check on 1 and 2 threads (see bench/ratelimit.c).
set -e
cd "$(dirname "$0")/.."
make -s build/rel/libpilotfish.a
mkdir -p build/rel/bench
cc -std=gnu11 -O2 -g -pthread -iquote . -D_GNU_SOURCE $(pkg-config --cflags libevent) \
    -o build/rel/bench/ratelimit bench/ratelimit.c build/rel/libpilotfish.a \
    $(pkg-config --libs libevent libevent_pthreads yaml-0.1 zlib hiredis) -lhttp_parser -lpthread -lm
for keys in 1000 1; do
    for t in 1 2; do
        build/rel/bench/ratelimit "$t" "$keys" "${CHECKS:-2000000}"
    done
done
