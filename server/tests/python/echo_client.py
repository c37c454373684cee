#!/usr/bin/env python3
"""Calls a ringrpc echo server with Apache Thrift's Python library; exits 0 when every check passes.

Usage: echo_client.py PORT

The generated code in gen-py/ comes from the echo IDL, made with thrift-compiler 0.17:

    thrift -o server/tests/python --gen py examples/echo/idl/echo.thrift

Checks, on Framed transport (TSocket + TFramedTransport + TBinaryProtocol), then on the
unframed TBufferedTransport:
- a few Echo calls, each reply matching its own request (ASCII, Unicode, 64 KiB);
- a call of an unknown method answers TApplicationException UNKNOWN_METHOD, and the same
  connection still serves Echo afterwards.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen-py"))

from thrift.Thrift import TApplicationException, TMessageType  # noqa: E402
from thrift.protocol import TBinaryProtocol  # noqa: E402
from thrift.transport import TSocket, TTransport  # noqa: E402

from echo import EchoServer  # noqa: E402
from echo.ttypes import Request  # noqa: E402


def unknown_method(client, seq):
    """Sends a call of `Nope` with the client's protocol and returns the exception it gets."""
    oprot, iprot = client._oprot, client._iprot
    oprot.writeMessageBegin("Nope", TMessageType.CALL, seq)
    args = EchoServer.Echo_args(req=Request(action="echo", msg="nope"))
    args.write(oprot)
    oprot.writeMessageEnd()
    oprot.trans.flush()
    name, mtype, rseq = iprot.readMessageBegin()
    if mtype != TMessageType.EXCEPTION:
        raise AssertionError(f"expected an exception, got message type {mtype}")
    e = TApplicationException()
    e.read(iprot)
    iprot.readMessageEnd()
    if rseq != seq:
        raise AssertionError(f"exception seq id {rseq}, sent {seq}")
    return e


def run(port, transport_class):
    sock = TSocket.TSocket("127.0.0.1", port)
    sock.setTimeout(5000)
    transport = transport_class(sock)
    client = EchoServer.Client(TBinaryProtocol.TBinaryProtocol(transport))
    transport.open()
    try:
        messages = ["hello", "ünïcödé ✓", "x" * 65536] + [f"call {i}" for i in range(5)]
        for i, msg in enumerate(messages):
            resp = client.Echo(Request(action="echo", msg=msg))
            if (resp.action, resp.msg) != ("echo", msg):
                raise AssertionError(f"call {i}: got {resp.action!r}/{resp.msg[:40]!r}")
        e = unknown_method(client, 1000)
        if e.type != TApplicationException.UNKNOWN_METHOD:
            raise AssertionError(f"unknown method: exception type {e.type} ({e.message})")
        resp = client.Echo(Request(action="echo", msg="after the exception"))
        if resp.msg != "after the exception":
            raise AssertionError(f"after the exception: got {resp.msg!r}")
    finally:
        transport.close()
    return len(messages) + 2


def main():
    port = int(sys.argv[1])
    total = 0
    for transport_class in (TTransport.TFramedTransport, TTransport.TBufferedTransport):
        total += run(port, transport_class)
    print(f"python thrift client: {total} calls ok")


if __name__ == "__main__":
    main()
