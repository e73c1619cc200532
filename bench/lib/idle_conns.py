#!/usr/bin/env python3
"""Opens N PostgreSQL connections (TLS and password or token authentication), holds them idle,
and closes them when its standard input closes.

Used by bench/run to measure the memory each idle client connection costs. Standard library
only. It speaks just enough of the protocol: SSLRequest, StartupMessage, cleartext / md5 /
SCRAM-SHA-256 password authentication, then waits for ReadyForQuery and sends nothing more.

Protocol: https://www.postgresql.org/docs/current/protocol-flow.html

Output: one JSON line on stdout once every connection is open or has failed:
  {"requested": N, "open": K, "failed": F, "errors": {"message": count, ...}, "seconds": S}
Then it waits for EOF on stdin, closes every connection, and exits 0.
"""

import argparse
import asyncio
import base64
import collections
import hashlib
import hmac
import json
import os
import secrets
import ssl
import struct
import sys
import time

SSL_REQUEST = struct.pack("!ii", 8, 80877103)
PROTOCOL_3_0 = 196608
# How long one connection may take to open and authenticate.
HANDSHAKE_TIMEOUT = 120.0


class ConnectError(Exception):
    pass


async def read_message(reader):
    header = await reader.readexactly(5)
    kind = header[:1]
    (length,) = struct.unpack("!i", header[1:])
    if length < 4 or length > 1 << 20:
        raise ConnectError(f"bad message length {length}")
    body = await reader.readexactly(length - 4)
    return kind, body


def message(kind, body):
    return kind + struct.pack("!i", len(body) + 4) + body


def error_text(body):
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[part[:1]] = part[1:].decode("utf-8", "replace")
    return f"{fields.get(b'S', 'ERROR')} {fields.get(b'C', '')}: {fields.get(b'M', '')}"


class Scram:
    """SCRAM-SHA-256 client (RFC 5802/7677) without channel binding. The salted password
    depends only on (password, salt, iterations), which are the same for every connection of
    one role, so it is computed once: the benchmark measures the server, not the client's
    PBKDF2."""

    cache = {}

    def __init__(self, password):
        self.password = password.encode()
        self.nonce = base64.b64encode(secrets.token_bytes(18)).decode()
        self.first_bare = f"n=,r={self.nonce}"

    def first(self):
        return ("n,," + self.first_bare).encode()

    def final(self, server_first):
        attrs = dict(item.split("=", 1) for item in server_first.decode().split(","))
        nonce, salt, iterations = attrs["r"], base64.b64decode(attrs["s"]), int(attrs["i"])
        if not nonce.startswith(self.nonce):
            raise ConnectError("SCRAM: server nonce does not extend ours")
        key = (self.password, salt, iterations)
        salted = Scram.cache.get(key)
        if salted is None:
            salted = hashlib.pbkdf2_hmac("sha256", self.password, salt, iterations)
            Scram.cache[key] = salted
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={nonce}"
        auth_message = f"{self.first_bare},{server_first.decode()},{without_proof}".encode()
        signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()


async def open_one(args, context):
    reader, writer = await asyncio.open_connection(args.host, args.port)
    try:
        if context is not None:
            writer.write(SSL_REQUEST)
            await writer.drain()
            answer = await reader.readexactly(1)
            if answer != b"S":
                raise ConnectError("server refused TLS")
            await writer.start_tls(context)
        params = b""
        for key, value in (
            ("user", args.user),
            ("database", args.database),
            ("application_name", "bench-idle"),
        ):
            params += key.encode() + b"\0" + value.encode() + b"\0"
        body = struct.pack("!i", PROTOCOL_3_0) + params + b"\0"
        writer.write(struct.pack("!i", len(body) + 4) + body)
        await writer.drain()
        scram = None
        while True:
            kind, body = await read_message(reader)
            if kind == b"E":
                raise ConnectError(error_text(body))
            if kind == b"Z":
                return reader, writer
            if kind != b"R":
                continue  # ParameterStatus, BackendKeyData, NoticeResponse
            (code,) = struct.unpack("!i", body[:4])
            if code == 0:
                continue
            if code == 3:  # cleartext: the token (Postern) or the password
                writer.write(message(b"p", args.password.encode() + b"\0"))
            elif code == 5:  # md5
                salt = body[4:8]
                inner = hashlib.md5((args.password + args.user).encode()).hexdigest()
                outer = hashlib.md5(inner.encode() + salt).hexdigest()
                writer.write(message(b"p", b"md5" + outer.encode() + b"\0"))
            elif code == 10:  # SASL: mechanisms offered
                mechanisms = [m for m in body[4:].split(b"\0") if m]
                if b"SCRAM-SHA-256" not in mechanisms:
                    raise ConnectError(f"no SCRAM-SHA-256 among {mechanisms}")
                scram = Scram(args.password)
                first = scram.first()
                writer.write(
                    message(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first)
                )
            elif code == 11:  # SASL continue
                if scram is None:
                    raise ConnectError("SASL continue without SASL")
                writer.write(message(b"p", scram.final(body[4:])))
            elif code == 12:  # SASL final (server signature; not checked here)
                continue
            else:
                raise ConnectError(f"unsupported authentication request {code}")
            await writer.drain()
    except BaseException:
        writer.close()
        raise


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--password-file", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--tls", action="store_true", help="SSLRequest, then TLS (no verification)")
    parser.add_argument("--parallel", type=int, default=32, help="handshakes in flight at once")
    args = parser.parse_args()
    with open(args.password_file) as f:
        args.password = f.read().strip()

    context = None
    if args.tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE

    started = time.monotonic()
    gate = asyncio.Semaphore(args.parallel)
    errors = collections.Counter()
    held = []

    async def one():
        async with gate:
            try:
                held.append(await asyncio.wait_for(open_one(args, context), HANDSHAKE_TIMEOUT))
            except Exception as e:  # noqa: BLE001 - every failure is counted, not raised
                errors[f"{type(e).__name__}: {e}"[:200]] += 1

    await asyncio.gather(*(one() for _ in range(args.count)))
    report = {
        "requested": args.count,
        "open": len(held),
        "failed": sum(errors.values()),
        "errors": dict(errors.most_common(5)),
        "seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(report), flush=True)

    # Hold until bench/run closes our stdin.
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    for _, writer in held:
        try:
            writer.write(message(b"X", b""))
            writer.close()
        except Exception:  # noqa: BLE001 - closing anyway
            pass
    await asyncio.sleep(0)  # let the transports flush the Terminate messages


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        os._exit(1)
