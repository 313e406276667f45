"""The event loop: a signal wakes it whichever thread the kernel chose."""

import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The loop sleeps in select with nothing due; SIGTERM goes to another thread
# (as the kernel may choose for kill(pid)), which only the C-level handler sees.
SCRIPT = textwrap.dedent("""
    import signal, sys, threading, time
    sys.path.insert(0, %r)
    from lib.eventloop import EventLoop
    loop = EventLoop()
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    def other_thread():
        time.sleep(0.2)
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
        time.sleep(30)
    threading.Thread(target=other_thread, daemon=True).start()
    loop.run()
    print("stopped")
""" % ROOT)


def test_a_signal_taken_by_another_thread_wakes_the_loop():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, timeout=20)
    assert done.stdout == b"stopped\n", done.stderr.decode()
