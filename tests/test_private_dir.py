from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING, Any

import pytest

from pxexec.connectors.private_dir import ensure_private_directory
from pxexec.errors import StoreIOError, UnsafeDirectoryError

if TYPE_CHECKING:
    from tests.local_user import OtherUser

pytest_plugins = ("tests.local_user",)


def _mode(path: Any) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o277])
def test_created_directories_are_0700_whatever_the_umask(tmp_path: Any, umask: int) -> None:
    top, leaf = tmp_path / "top", tmp_path / "top" / "leaf"
    old = os.umask(umask)
    try:
        ensure_private_directory(str(leaf), parents=[str(top)])
    finally:
        os.umask(old)
    assert _mode(top) == 0o700 and _mode(leaf) == 0o700


def test_missing_parent_is_not_created(tmp_path: Any) -> None:
    with pytest.raises(StoreIOError, match=r"parent .* does not exist"):
        ensure_private_directory(str(tmp_path / "no" / "such" / "tree"))
    assert not (tmp_path / "no").exists()
    with pytest.raises(StoreIOError, match="does not exist"):
        ensure_private_directory(str(tmp_path / "absent"), create=False)


def test_symlink_is_refused_and_not_followed(tmp_path: Any) -> None:
    target = tmp_path / "target"
    target.mkdir(mode=0o755)
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(UnsafeDirectoryError, match="symlink"):
        ensure_private_directory(str(tmp_path / "link"))
    with pytest.raises(UnsafeDirectoryError, match="symlink"):
        ensure_private_directory(str(tmp_path / "link" / "ns"), parents=[str(tmp_path / "link")])
    assert _mode(target) == 0o755 and not (target / "ns").exists()


def test_writable_by_others_is_refused_readable_is_tightened(tmp_path: Any) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    for mode in (0o777, 0o770, 0o702, 0o1777):
        os.chmod(shared, mode)
        with pytest.raises(UnsafeDirectoryError, match="other users can write"):
            ensure_private_directory(str(shared))
        assert _mode(shared) == mode
    os.chmod(shared, 0o755)  # nobody else could have written: safe to tighten
    ensure_private_directory(str(shared))
    assert _mode(shared) == 0o700


def test_a_file_in_place_of_the_directory_is_refused(tmp_path: Any) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(UnsafeDirectoryError, match="not a directory"):
        ensure_private_directory(str(tmp_path / "f"))


def test_directory_of_another_user_is_refused(shared_tmp: str, other_user: OtherUser) -> None:
    planted = os.path.join(shared_tmp, "planted")
    other_user.run(f"import os; os.mkdir({str(planted)!r}, 0o700)")
    assert os.lstat(planted).st_uid == other_user.uid
    with pytest.raises(UnsafeDirectoryError, match=f"owned by uid {other_user.uid}"):
        ensure_private_directory(str(planted))
