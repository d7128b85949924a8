"""children(): immediate child names of a path, paginated, without scanning subtrees."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from confer.kv import DeleteRange, KVStore, Put


def store_with(*keys: bytes) -> KVStore:
    store = KVStore()
    for k in keys:
        store.execute(Put(k, b""))
    return store


def all_pages(store: KVStore, path: bytes, page: int) -> list[bytes]:
    names: list[bytes] = []
    after = b""
    while True:
        batch, more = store.children(path, start_after=after, limit=page)
        names += batch
        if not more:
            return names
        assert len(batch) == page
        after = batch[-1]


def test_children_are_the_first_segments_below_the_path() -> None:
    store = store_with(b"/a", b"/a/b", b"/a/c/d", b"/a/c/e", b"/b/x", b"/ab/y")
    assert store.children(b"/a") == ([b"b", b"c"], False)
    assert store.children("/a/c") == ([b"d", b"e"], False)
    assert store.children(b"/") == ([b"a", b"ab", b"b"], False)
    assert store.children(b"/a/b") == ([], False)
    assert store.children(b"/nothing") == ([], False)


def test_the_path_boundary_is_respected() -> None:
    store = store_with(b"/app/x", b"/application/y", b"/app0/z", b"/app-1/w")
    assert store.children(b"/app") == ([b"x"], False)
    assert store.children(b"/application") == ([b"y"], False)


def test_names_with_bytes_below_slash_sort_as_names() -> None:
    # Key order: /d/x, /d/x-1, /d/x.y, /d/x/sub; name order: x, x-1, x.y.
    store = store_with(b"/d/x-1", b"/d/x.y", b"/d/x/sub", b"/d/x!/deep/er")
    assert store.children(b"/d") == ([b"x", b"x!", b"x-1", b"x.y"], False)
    assert all_pages(store, b"/d", 1) == [b"x", b"x!", b"x-1", b"x.y"]


def test_pagination() -> None:
    store = store_with(*[b"/p/n%02d/leaf" % i for i in range(10)])
    assert store.children(b"/p", limit=3) == ([b"n00", b"n01", b"n02"], True)
    assert store.children(b"/p", start_after=b"n02", limit=3) == ([b"n03", b"n04", b"n05"], True)
    assert store.children(b"/p", start_after=b"n06", limit=3) == ([b"n07", b"n08", b"n09"], False)
    assert store.children(b"/p", start_after=b"n09") == ([], False)
    assert store.children(b"/p", start_after=b"n04x", limit=1) == ([b"n05"], True)


def test_deleted_children_disappear() -> None:
    store = store_with(b"/a/b/c", b"/a/d")
    store.execute(DeleteRange(b"/a/b/", b"/a/b0"))
    assert store.children(b"/a") == ([b"d"], False)


def test_a_deep_subtree_is_skipped_not_scanned() -> None:
    store = store_with(b"/t/a", b"/t/z")
    for i in range(3000):
        store.execute(Put(b"/t/m/%04d/leaf" % i, b""))
    calls = 0
    live = store._live
    original = live.bisect_left

    def counting(key: bytes) -> int:
        nonlocal calls
        calls += 1
        return original(key)

    live.bisect_left = counting  # type: ignore[method-assign]
    assert store.children(b"/t") == ([b"a", b"m", b"z"], False)
    # At most two bisections per child (the next key may still be in the previous child's
    # subtree, which one more bisection skips), plus the one that finds the end.
    assert calls <= 2 * 3 + 1


SEGMENT = st.text(alphabet="ab-./", min_size=0, max_size=4).map(str.encode)


@settings(max_examples=300, deadline=None)
@given(keys=st.lists(st.lists(st.sampled_from([b"a", b"b", b"a-", b"a.b", b"-", b"ab"]),
                              min_size=1, max_size=4), max_size=25),
       extra=st.lists(SEGMENT, max_size=5), page=st.integers(0, 4),
       parent=st.sampled_from([b"/", b"/a", b"/a-", b"/a/b"]))
def test_children_match_a_brute_force_listing(keys: list[list[bytes]], extra: list[bytes],
                                              page: int, parent: bytes) -> None:
    paths = [b"/" + b"/".join(segments) for segments in keys]
    paths += [b"/a" + e for e in extra]  # arbitrary bytes too, even not valid paths
    store = store_with(*paths)
    base = parent if parent.endswith(b"/") else parent + b"/"
    expected = sorted({p[len(base):].split(b"/")[0] for p in set(paths)
                       if p.startswith(base)} - {b""})
    assert all_pages(store, parent, page) == expected
