"""Peer runner: nacos-sdk-python 0.1.x (module `nacos`), v1 HTTP auto-beat.

Usage: runner.py SERVER_ADDR N SECONDS SERVICE_PREFIX

Registers N ephemeral instances 10.255.x.y:port (never contacted) in service
`<prefix>-python` through NacosClient.add_naming_instance(..., heartbeat_interval=5),
which starts the client's own auto-beat task (one HeartbeatTask thread per
instance, PUT /nacos/v1/ns/instance/beat then sleep 5 s). Prints `ready <n>`
once every registration call has returned, `done` after SECONDS, then exits
without deregistering (the instances expire on the server).
"""

import logging
import os
import sys
import time

import nacos

BEAT_INTERVAL_S = 5


def ip(i):
    return "10.255.%d.%d" % (i // 200, i % 200 + 1)


def port(i):
    return 20000 + i


def main():
    if len(sys.argv) != 5:
        print("usage: runner.py SERVER_ADDR N SECONDS SERVICE_PREFIX", file=sys.stderr)
        return 2
    server, n, seconds, prefix = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    service = prefix + "-python"

    # Same policy as the other runners: WARNING and above to stderr, INFO dropped.
    # The client always creates a log dir (default ~/logs/nacos); put it in the
    # working directory (run.sh runs us in a throwaway dir).
    log_dir = os.environ.get("PEER_LOG_DIR") or os.path.join(os.getcwd(), "nacos-logs")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    client = nacos.NacosClient(server, namespace="public", logDir=log_dir,
                               log_level=logging.WARNING)

    for i in range(n):
        ok = client.add_naming_instance(service, ip(i), port(i),
                                        heartbeat_interval=BEAT_INTERVAL_S)
        if not ok:
            print("registration %d refused by server" % i, file=sys.stderr)
            return 1
    print("ready %d" % n, flush=True)

    time.sleep(seconds)
    print("done", flush=True)
    # Beat threads are daemons; skip interpreter teardown of 1000 threads.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
