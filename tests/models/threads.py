"""Test helper: run a function in a fresh thread (empty thread-local scratch buffers)."""

import threading


def in_fresh_thread(fn):
    """Run ``fn`` in a new thread (empty thread-local scratch) and return its result or re-raise."""
    box = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = e

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]
