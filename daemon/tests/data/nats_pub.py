#!/usr/bin/env python3
"""A NATS client in a few lines of the raw protocol (Python 3 standard library only), to show
that a non-Rust client can drive gslb-state: a KV put is a plain publish on
`$KV.<bucket>.<key>` (the subject is the same with a JetStream domain, for the local domain).

    nats_pub.py HOST PORT SUBJECT FILE    publish FILE's bytes on SUBJECT, then PING/PONG

Prints `published N bytes on SUBJECT` once the server has answered the PING (so it has
processed the PUB), and exits non-zero on any -ERR or protocol surprise.
"""

import json
import socket
import sys


def read_line(sock, buf):
    while b"\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise SystemExit("connection closed by the server")
        buf += chunk
    line, rest = buf.split(b"\r\n", 1)
    return line.decode(), rest


def main():
    host, port, subject, path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    payload = open(path, "rb").read()
    sock = socket.create_connection((host, port), timeout=10)
    buf = b""
    line, buf = read_line(sock, buf)
    if not line.startswith("INFO "):
        raise SystemExit("expected INFO, got %r" % line)
    info = json.loads(line[5:])
    if len(payload) > info.get("max_payload", 1 << 20):
        raise SystemExit("payload larger than the server's max_payload")
    connect = {"verbose": False, "pedantic": False, "name": "nats_pub.py", "lang": "python3"}
    sock.sendall(b"CONNECT " + json.dumps(connect).encode() + b"\r\n")
    sock.sendall(("PUB %s %d\r\n" % (subject, len(payload))).encode() + payload + b"\r\n")
    sock.sendall(b"PING\r\n")
    while True:
        line, buf = read_line(sock, buf)
        if line == "PONG":
            break
        if line == "PING":
            sock.sendall(b"PONG\r\n")
            continue
        if line.startswith("-ERR"):
            raise SystemExit("server error: " + line)
        if line == "+OK":
            continue
        raise SystemExit("unexpected line from the server: %r" % line)
    sock.close()
    print("published %d bytes on %s" % (len(payload), subject))


if __name__ == "__main__":
    main()
