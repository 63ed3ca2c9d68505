"""User C and what offload reads for it: the compile cache is keyed on everything clang read (any
header, however included), checked to be root's alone before anything in it is loaded; the files
a program includes are bounded C text; a user's value is quoted short in messages."""

import os
import shutil
from pathlib import Path

import pytest

from offload import data
from offload.errors import RefusedError, UsageError, excerpt
from offload.load import compile as compile_mod
from offload.load import programs

needs_clang = pytest.mark.skipif(not shutil.which("clang"), reason="clang compiles the C")
PROG = '#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n#include <verdict.h>\n#include "rc.h" // the rc\n' \
       'SEC("xdp") int p(struct xdp_md *ctx) { return VERDICT + RC; }\nchar _license[] SEC("license") = "GPL";\n'


def test_excerpt_cuts_and_escapes():
    assert excerpt("drop") == "'drop'"
    secret = "s3cr3t" * 1000
    assert excerpt(secret) == repr(secret[:40] + "…") and len(excerpt(secret, 10)) == 13
    assert excerpt("a\x1b[2Jb\udcff") == "'a\\x1b[2Jb\\udcff'"   # a terminal escape and a stray byte, shown inert


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(data.ENV_CACHE, str(tmp_path / "cache"))
    return tmp_path / "cache"


def _program(d: Path, verdict: str = "XDP_PASS", rc: str = "0") -> Path:
    d.mkdir(exist_ok=True)
    (d / "verdict.h").write_text(f"#define VERDICT {verdict}\n")
    (d / "rc.h").write_text(f"#define RC {rc}\n")
    (d / "prog.c").write_text(PROG)
    return d / "prog.c"


def _compiled(src: Path, defines: tuple[str, ...] = ()) -> tuple[Path, bool]:
    return compile_mod.cached_object(compile_mod.preprocess(src, defines), data.owned_cache("objects"))


@needs_clang
def test_the_cache_key_covers_every_header(tmp_path, cache):
    src = _program(tmp_path / "a")
    first, hit = _compiled(src)
    assert not hit and first.parent == cache / "objects"
    assert _compiled(src) == (first, True)                                   # same text: used again
    (tmp_path / "a" / "verdict.h").write_text("#define VERDICT XDP_DROP\n")  # included as <verdict.h>
    second, hit = _compiled(src)
    assert not hit and second != first
    (tmp_path / "a" / "rc.h").write_text("#define RC 1\n")                  # "rc.h" // with a comment after
    third, hit = _compiled(src)
    assert not hit and third not in (first, second)
    assert _compiled(src, ("OFFLOAD_HW",))[0] not in (first, second, third)   # flags are in the key
    other = _program(tmp_path / "b", "XDP_ABORTED")                         # same text, other headers
    assert other.read_bytes() == src.read_bytes() and _compiled(other)[0] not in (first, second, third)
    assert {p.name for p in (cache / "objects").iterdir()} == {p.name for p in (first, second, third)} | {
        _compiled(src, ("OFFLOAD_HW",))[0].name, _compiled(other)[0].name}


@needs_clang
def test_a_cache_entry_that_is_not_ours_alone_is_compiled_over(tmp_path, cache):
    src = _program(tmp_path / "a")
    obj, _ = _compiled(src)
    good = obj.read_bytes()
    obj.unlink()
    (tmp_path / "planted.o").write_bytes(b"not this")
    obj.symlink_to(tmp_path / "planted.o")                                   # a link is never followed
    assert _compiled(src) == (obj, False) and not obj.is_symlink() and obj.read_bytes() == good
    assert (tmp_path / "planted.o").read_bytes() == b"not this"
    obj.chmod(0o666)                                                         # writable by others
    assert _compiled(src) == (obj, False) and obj.stat().st_mode & 0o777 == 0o644


def test_depfile_paths_with_spaces_and_continuations():
    text = "offload-deps: /tmp/my\\ prog.c /usr/include/linux/bpf.h \\\n  /tmp/a$$b.h\n"
    assert compile_mod.parse_depfile(text) == ["/tmp/my prog.c", "/usr/include/linux/bpf.h", "/tmp/a$b.h"]


@pytest.mark.skipif(os.geteuid() != 0, reason="gives directories to another user")
@pytest.mark.parametrize("case", ["other owner", "writable by others", "link", "subdirectory not ours",
                                  "parent not ours"])
def test_a_cache_directory_not_ours_alone_is_refused(tmp_path, monkeypatch, case):
    cache = tmp_path / "cache"
    (cache / "objects").mkdir(parents=True, mode=0o700)
    where = cache
    if case == "other owner":
        os.chown(cache, 65534, 65534)
    elif case == "writable by others":
        cache.chmod(0o777)
    elif case == "link":
        cache.rename(tmp_path / "real")
        cache.symlink_to(tmp_path / "real")
    elif case == "subdirectory not ours":
        where = cache / "objects"
        os.chown(where, 65534, 65534)
    else:
        where = tmp_path / "theirs"
        (where / "cache").mkdir(parents=True)
        os.chown(where, 65534, 65534)
        cache = where / "cache"
    monkeypatch.setenv(data.ENV_CACHE, str(cache))
    with pytest.raises(RefusedError) as e:
        data.owned_cache("objects")
    assert f"the cache directory {cache} is not safe to use: {where}:" in str(e.value)
    assert e.value.exit_code == 9 and data.ENV_CACHE in str(e.value)


def test_a_missing_cache_is_made_ours_alone(tmp_path, monkeypatch):
    monkeypatch.setenv(data.ENV_CACHE, str(tmp_path / "new" / "cache"))
    made = data.owned_cache("objects")
    assert made == tmp_path.resolve() / "new" / "cache" / "objects"
    for d in (made, made.parent, made.parent.parent):
        st = d.stat()
        assert st.st_uid == os.geteuid() and st.st_mode & 0o777 == 0o700


@pytest.mark.parametrize("case", ["binary", "pagemap", "deep", "multiplying", "missing", "fifo"])
def test_bcc_includes_are_bounded_c_text(tmp_path, case):
    main = tmp_path / "main.c"
    main.write_text('#include "h0.h"\nint xdp_prog(void *ctx) { return 2; }\n')
    head = tmp_path / "h0.h"
    if case == "binary":
        shutil.copy("/bin/true", head)
        needle = f"{head}: not C source: not UTF-8 text"
    elif case == "pagemap":
        head.symlink_to("/proc/self/pagemap")
        needle = "/pagemap is no ordinary file: it says it holds 0 bytes and reads on"
    elif case == "deep":
        for i in range(1200):
            (tmp_path / f"h{i}.h").write_text(f'#include "h{i + 1}.h"\n')
        needle = f"{main}: #includes nest deeper than 200"
    elif case == "multiplying":   # each header includes the next twice: 2**40 inclusions
        for i in range(40):
            (tmp_path / f"h{i}.h").write_text(f'#include "h{i + 1}.h"\n#include "h{i + 1}.h"\n')
        (tmp_path / "h40.h").write_text("int x;\n")
        needle = f"{main}: more than 10000 #includes in all"
    elif case == "missing":
        needle = f"{main}: #include \"h0.h\" not found next to it"
    else:
        os.mkfifo(head)
        needle = f"{head} is not a regular file (a FIFO)"
    with pytest.raises(UsageError) as e:
        programs.inline_includes(main)
    assert needle in str(e.value) and len(str(e.value)) < 500


def test_inlined_includes_keep_line_numbers(tmp_path):
    (tmp_path / "a.h").write_text("int a;\n")
    (tmp_path / "main.c").write_text('#include "a.h"\nint x;\n#include "a.h"\nint y;\n')
    lines = programs.inline_includes(tmp_path / "main.c").splitlines()
    assert lines == ["int a;", '#line 2 "main.c"', "int x;", "int a;", '#line 4 "main.c"', "int y;"]


@pytest.mark.parametrize("params,needle", [
    ({"target": "eth\udcff"}, "--param 'target': its value is not UTF-8 text (byte 0xff at character 3)"),
    ({"x" * 200: "1"}, "bad parameter name 'xxxxxxxx"),
    ({"a-b": "1"}, "bad parameter name 'a-b'"),
])
def test_params_are_identifiers_and_text(params, needle):
    with pytest.raises(UsageError) as e:
        programs.resolve("count_drop", params)
    assert needle in str(e.value) and len(str(e.value)) < 200
