"""The /proc parsing that finds the QEMU process behind gdb's socket."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

from gdbext.model import localqemu

# Lines as Linux 6.1 writes them (the sl column and trailing fields abridged
# only where the parser ignores them).
TCP = textwrap.dedent("""\
      sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
       0: 0100007F:B3A1 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 41234 1 0 100 0 0 10 0
       1: 0100007F:B3A1 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 41240 1 0 20 4 30 10 -1
       2: 0100007F:D2F0 0100007F:B3A1 01 00000000:00000000 00:00000000 00000000     0        0 41239 1 0 20 4 30 10 -1
    """)
TCP6 = textwrap.dedent("""\
      sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
       0: 00000000000000000000000001000000:04D2 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5151 1 0 100 0 0 10 0
    """)


def test_tcp_lines_decode_to_endpoints():
    sockets = localqemu.parse_proc_net_tcp(TCP)
    assert [(s.local, s.remote, s.state, s.inode) for s in sockets] == [
        (("127.0.0.1", 0xB3A1), ("0.0.0.0", 0), 0x0A, 41234),
        (("127.0.0.1", 0xB3A1), ("127.0.0.1", 0xD2F0), 1, 41240),
        (("127.0.0.1", 0xD2F0), ("127.0.0.1", 0xB3A1), 1, 41239),
    ]
    (six,) = localqemu.parse_proc_net_tcp(TCP6)
    assert six.local == ("::1", 1234) and six.state == 0x0A


def test_unix_lines_give_bound_paths_only():
    text = ("Num       RefCount Protocol Flags    Type St Inode Path\n"
            "00000000b2605481: 00000002 00000000 00010000 0001 01 1663 /run/qemu gdb.sock\n"
            "0000000008aec43a: 00000003 00000000 00000000 0001 03  1664\n")
    assert localqemu.parse_proc_net_unix(text) == {1663: "/run/qemu gdb.sock"}


def test_connection_details():
    assert localqemu.parse_details("localhost:1234") == ("tcp", 1234)
    assert localqemu.parse_details("127.0.0.1:1234") == ("tcp", 1234)
    assert localqemu.parse_details(":1234") == ("tcp", 1234)
    assert localqemu.parse_details("tcp:[::1]:1234") == ("tcp", 1234)
    assert localqemu.parse_details("/tmp/gdb.sock") == ("unix", "/tmp/gdb.sock")
    assert localqemu.parse_details("| qemu-system-x86_64 -gdb stdio") is None


def test_finds_the_process_at_the_other_end_of_a_real_socket():
    """A child listens; this process connects; the child is found, not this one."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import socket, sys, time
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", {port})); s.listen(1); print("up", flush=True)
        c, _ = s.accept(); print("accepted", flush=True); sys.stdin.read()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    listener.close()
    try:
        assert child.stdout.readline().strip() == "up"
        client = socket.create_connection(("127.0.0.1", port))
        try:
            # Until accept() the kernel's socket of the connection has no inode.
            assert child.stdout.readline().strip() == "accepted"
            pid, why = localqemu.find_stub_process(f"127.0.0.1:{port}")
            assert (pid, why) == (child.pid, "")
            # No socket of ours goes to another port.
            pid, why = localqemu.find_stub_process(f"127.0.0.1:{port + 1 if port < 65535 else 1}")
            assert pid is None and "no established socket" in why
        finally:
            client.close()
    finally:
        child.stdin.close()
        child.wait(timeout=10)
    assert os.getpid() != child.pid
