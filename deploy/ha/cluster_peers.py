#!/usr/bin/env python3
"""Peers of the cluster test (deploy/ha/cluster-test.sh), standard library only.

  cluster_peers.py converter PORT LOG   a Modbus TCP converter with one Legrand 0 046 77 meter
                                        (unit 1, the built-in map `legrand-046-77`) whose voltage
                                        alternates 240 V / 260 V every SWING_SECS seconds (an
                                        alarm threshold of 250 V is crossed at known times);
                                        every request is logged as `epoch_ms unit function`.
  cluster_peers.py webhook PORT LOG     an HTTP sink answering 200 to every POST; logs one line
                                        `epoch_ms idempotency-key` per request received.

Headend has no standalone subcommand for its simulated converter (server/src/demo/converter.rs
runs inside `headend demo` and the tests), so this one answers the same map over MBAP.
"""
import http.server
import os
import socketserver
import struct
import sys
import threading
import time

SWING_SECS = float(os.environ.get("SWING_SECS", "20"))
UNIT = 1
FIRST, LAST = 0x2000, 0x200D
START = time.time()
lock = threading.Lock()


def registers():
    """The meter's holding registers 0x2000..0x200D now (wire addresses, map legrand-046-77)."""
    elapsed = time.time() - START
    high = int(elapsed // SWING_SECS) % 2 == 1
    u_mv = 260_000 if high else 240_000
    i_ma = 4_000
    p_w = 900
    # Total active energy, 0.01 kWh: 1000 kWh plus 1 Wh a second (never decreasing).
    energy = 100_000 + int(elapsed) // 10
    words = [0] * (LAST - FIRST + 1)
    words[0:2] = divmod(u_mv, 0x10000)
    words[2:4] = divmod(i_ma, 0x10000)
    words[4:6] = divmod(p_w, 0x10000)
    words[6] = 5000  # 50.00 Hz
    words[7] = 95  # pf 0.95
    words[8:10] = divmod(energy, 0x10000)
    words[12:14] = divmod(energy, 0x10000)
    return words


def answer(log, tid, unit, pdu):
    function = pdu[0]
    with lock:
        log.write(f"{int(time.time() * 1000)} {unit} {function}\n")
        log.flush()
    if unit != UNIT:
        return None  # nobody there: silence, like a dead unit
    if function != 3 or len(pdu) < 5:
        return bytes([function | 0x80, 1])
    address, count = struct.unpack(">HH", pdu[1:5])
    if count < 1 or address < FIRST or address + count - 1 > LAST:
        return bytes([0x83, 2])
    words = registers()[address - FIRST:address - FIRST + count]
    return bytes([3, 2 * count]) + struct.pack(f">{count}H", *words)


def converter(port, path):
    log = open(path, "a", encoding="ascii")

    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            sock = self.request
            while True:
                head = recv_exact(sock, 7)
                if head is None:
                    return
                tid, proto, length, unit = struct.unpack(">HHHB", head)
                pdu = recv_exact(sock, length - 1)
                if pdu is None or proto != 0:
                    return
                reply = answer(log, tid, unit, pdu)
                if reply is not None:
                    sock.sendall(struct.pack(">HHHB", tid, 0, len(reply) + 1, unit) + reply)

    serve(socketserver.ThreadingTCPServer, ("127.0.0.1", port), Handler)


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def webhook(port, path):
    log = open(path, "a", encoding="ascii")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            key = self.headers.get("Idempotency-Key", "-")
            with lock:
                log.write(f"{int(time.time() * 1000)} {key}\n")
                log.flush()
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    serve(http.server.ThreadingHTTPServer, ("127.0.0.1", port), Handler)


def serve(kind, addr, handler):
    kind.allow_reuse_address = True
    kind.daemon_threads = True
    with kind(addr, handler) as server:
        server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ("converter", "webhook"):
        sys.exit(__doc__)
    {"converter": converter, "webhook": webhook}[sys.argv[1]](int(sys.argv[2]), sys.argv[3])
