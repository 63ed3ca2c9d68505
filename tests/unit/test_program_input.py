"""The errors a user meets first when naming a program or an interface: what was looked for and
where, on which device, and what to give instead."""

import os
from pathlib import Path

import pytest

from offload.errors import UsageError
from offload.kernel import names
from offload.load import programs


def refused(spec: str) -> UsageError:
    with pytest.raises(UsageError) as e:
        programs.resolve(spec)
    return e.value


def test_a_name_that_is_neither_a_library_program_nor_a_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    e = refused("nosuch")
    assert e.message == ("program not found: nosuch: no library program of that name, and no such file in the "
                         "current directory")
    assert "count_drop" in e.hint and "C file" in e.hint


def test_a_missing_relative_path_says_where_it_was_looked_for(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    e = refused("../x/../prog.o")
    assert e.message == f"program not found: ../x/../prog.o: no such file (looked for {str(tmp_path / 'prog.o')!r})"
    assert "relative path is taken from the current directory" in e.hint
    absolute = refused("/nonexistent/prog.o")
    assert absolute.message == "program not found: /nonexistent/prog.o: no such file"
    assert "relative" not in absolute.hint


def test_a_link_to_nothing_is_named_with_its_target(tmp_path: Path) -> None:
    link = tmp_path / "prog.o"
    os.symlink(tmp_path / "gone.o", link)
    assert refused(str(link)).message == (f"program not found: {link}: a link to {str(tmp_path / 'gone.o')!r}, "
                                          "which does not exist")


def test_an_attach_names_the_device_it_was_for(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as e:
        programs.resolve_for("lab-a0", str(tmp_path))
    assert e.value.message == f"lab-a0: nothing attached: program {tmp_path} is not a regular file (a directory)"


def test_a_missing_interface_names_the_namespace_and_how_to_list_it() -> None:
    with pytest.raises(UsageError) as e:
        names.ifindex_of("nosuch0")
    assert e.value.message in ("nosuch0: no such interface in the host's network namespace",
                               "nosuch0: no such interface in this network namespace")
    assert e.value.hint.startswith("list them with `offload probe`")


def test_an_error_said_within_its_context_keeps_its_kind_and_hint() -> None:
    from offload.errors import Exit, RefusedError

    e = RefusedError("a link of uid 7", hint="remove it").within("--csv 'x.csv'")
    assert (type(e), e.exit_code, e.message, e.hint) == (RefusedError, Exit.REFUSED, "--csv 'x.csv': a link of uid 7",
                                                         "remove it")


def test_an_object_is_loaded_from_the_bytes_that_were_checked(tmp_path: Path) -> None:
    """libbpf and every later load open offload's own copy of what was read and checked, so a
    link put in the user's path after the check is never followed (a time-of-check race)."""
    lib = programs.library_object("count_drop").read_bytes()
    user = tmp_path / "mine.o"
    user.write_bytes(lib)
    prog = programs.resolve(str(user))
    user.unlink()
    user.symlink_to("/etc/hostname")          # swapped in after the check
    held = prog.object_for(hw=False)
    assert held.parent != tmp_path and not held.is_symlink()
    assert held.read_bytes() == lib
    assert prog.path == user.parent.resolve() / "mine.o"   # what the user named is still what is shown


def test_an_objects_checked_copy_is_written_once_per_content(tmp_path: Path) -> None:
    user = tmp_path / "mine.o"
    user.write_bytes(programs.library_object("count_drop").read_bytes())
    held = programs.resolve(str(user)).object_for(hw=False)
    first = held.stat()
    assert programs.resolve(str(user)).object_for(hw=False) == held
    assert held.stat().st_ino == first.st_ino      # the same file, not replaced on every resolve
    user.write_bytes(programs.library_object("count_pass").read_bytes())
    assert programs.resolve(str(user)).object_for(hw=False) != held   # new bytes, a copy of their own
