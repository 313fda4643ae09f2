"""The spool file on its own: removals and re-keying of more rows than one statement
binds, beside appends from another thread."""

from __future__ import annotations

import queue
import threading
from pathlib import Path

from activity_client.spool import ROWS_PER_STATEMENT, Spool


def test_delete_and_rekey_span_several_statements(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path / "s.db"))
    count = 2 * ROWS_PER_STATEMENT + 7
    rows = spool.append([("k1", b'{"n":%d}' % n) for n in range(count)])
    spool.rekey(rows[1:], "k2")
    spool.delete(rows[2:-1])
    assert spool.load() == [
        (rows[0], "k1", b'{"n":0}'),
        (rows[1], "k2", b'{"n":1}'),
        (rows[-1], "k2", b'{"n":%d}' % (count - 1)),
    ]
    spool.delete([])  # nothing to do: no transaction
    spool.close()


def test_removals_beside_appends_lose_nothing(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path / "s.db"))
    written: queue.Queue[list[int] | None] = queue.Queue()

    def remover() -> None:
        while (rows := written.get()) is not None:
            spool.delete(rows)

    thread = threading.Thread(target=remover)
    thread.start()
    for n in range(200):
        written.put(spool.append([("k", b'{"n":%d,"i":%d}' % (n, i)) for i in range(3)]))
    written.put(None)
    thread.join(30)
    assert not thread.is_alive()
    kept = spool.append([("k", b"{}")])
    assert [row for row, _, _ in spool.load()] == kept
    spool.close()
