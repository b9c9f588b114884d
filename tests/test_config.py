"""buildlib.config_load.load: every bad images.yaml is one clear InputError; good ones load."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from buildlib import config, config_load, config_note, config_yaml
from buildlib.errors import InputError

IMAGE_KEYS = ["template", "parent", "files", "args", "vars", "labels", "volumes"]
SETTINGS_KEYS = ["registry", "namespace", "prefix", "tag", "format", "timestamp", "jobs",
                 "build_timeout",
                 "push_retries", "tls_verify", "isolation", "build_dir", "templates",
                 "buildah_args"]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "images.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str, image: str | None = None) -> str:
    """Load `text` expecting an InputError; check what every such message must hold."""
    path = write(tmp_path, text)
    with pytest.raises(InputError) as info:
        config_load.load(path)
    message = str(info.value)
    assert str(path.resolve()) in message, message
    assert "fix:" in message, message
    if image is not None:
        assert info.value.image == image
        assert f"image '{image}'" in message, message
    return message


# --- malformed files ------------------------------------------------------------------------


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    message = load_error(tmp_path, """\
        images:
          base:
          nova: {parent: base
          cron:
        """)
    assert "malformed YAML" in message
    assert "line 4" in message


def test_tab_indentation_names_the_line(tmp_path: Path) -> None:
    message = load_error(tmp_path, "images:\n  base:\n\tnova: {parent: base}\n")
    assert "line 3" in message


@pytest.mark.parametrize("text", ["- base\n- nova\n", "just a string\n", "", "# only a comment\n",
                                  "42\n"], ids=["list", "string", "empty", "comment", "number"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    message = load_error(tmp_path, text)
    assert "mapping" in message
    assert "images:" in message


def test_missing_images_key(tmp_path: Path) -> None:
    message = load_error(tmp_path, "settings: {tag: dev}\n")
    assert "missing key 'images'" in message


@pytest.mark.parametrize("text, image", [
    ("vars: {tag: v1}\nimages: {base: }\n", None),
    ("images: {base: {vars: {settings: {}}}}\n", "base"),
], ids=["global", "image"])
def test_vars_may_not_take_a_name_templates_already_see(tmp_path: Path, text: str,
                                                        image: str | None) -> None:
    message = load_error(tmp_path, text, image)
    assert "a name every template already sees" in message
    assert "settings.<name>" in message


def test_jinja_import_paths_are_checked(tmp_path: Path) -> None:
    message = load_error(tmp_path, "jinja: {filters: {f: 'not a path'}}\nimages: {base: }\n")
    assert "'jinja.filters.f'" in message
    assert "module:attr" in message


def test_global_args_and_labels_are_read(tmp_path: Path) -> None:
    loaded = config_load.load(write(tmp_path, """\
        settings: {args: {HTTP_PROXY: "http://proxy:3128"}, labels: {vendor: us}}
        images: {base: }
        """))
    assert loaded.settings.args == {"HTTP_PROXY": "http://proxy:3128"}
    assert loaded.settings.labels == {"vendor": "us"}


def test_missing_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "nothere.yaml"
    with pytest.raises(InputError) as info:
        config_load.load(path)
    assert str(path.resolve()) in str(info.value)
    assert "fix:" in str(info.value)


@pytest.mark.parametrize("text", ["images: [base, nova]\n", "images:\n"], ids=["list", "null"])
def test_images_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    message = load_error(tmp_path, text)
    assert "'images'" in message


def test_image_body_must_be_a_mapping(tmp_path: Path) -> None:
    message = load_error(tmp_path, "images:\n  base: busybox\n", image="base")
    assert "'busybox'" in message


# --- unknown keys ---------------------------------------------------------------------------


def test_unknown_top_level_key(tmp_path: Path) -> None:
    message = load_error(tmp_path, """\
        images: {base: }
        setings: {tag: dev}
        """)
    assert "unknown key 'setings'" in message
    assert "allowed here: images, settings, vars" in message


def test_unknown_settings_key(tmp_path: Path) -> None:
    message = load_error(tmp_path, """\
        settings: {jbos: 4}
        images: {base: }
        """)
    assert "'settings.jbos'" in message
    allowed = message.partition("allowed here:")[2].replace(",", " ").split()
    assert set(SETTINGS_KEYS) <= set(allowed)


def test_unknown_image_key_lists_the_allowed_keys(tmp_path: Path) -> None:
    message = load_error(tmp_path, """\
        images:
          base:
          nova: {parnt: base}
        """, image="nova")
    assert "'parnt'" in message
    allowed = message.partition("allowed here:")[2].replace(",", " ").split()
    assert set(IMAGE_KEYS) <= set(allowed)
    assert "parnt" not in allowed and "name" not in allowed


def test_name_is_not_an_image_key(tmp_path: Path) -> None:
    """The name is the key under `images:`; a `name:` would be silently ignored."""
    message = load_error(tmp_path, "images:\n  base: {name: other}\n", image="base")
    assert "unknown key 'images.base.name'" in message


def test_timestamp_from_settings_or_source_date_epoch(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    assert config_load.load(write(tmp_path, "images: {base: }\n")).timestamp == 0
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert config_load.load(write(tmp_path, "images: {base: }\n")).timestamp == 1700000000
    pinned = "settings: {timestamp: 5}\nimages: {base: }\n"
    assert config_load.load(write(tmp_path, pinned)).timestamp == 5
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    assert "SOURCE_DATE_EPOCH" in load_error(tmp_path, "images: {base: }\n")


# --- wrong types and values -----------------------------------------------------------------


@pytest.mark.parametrize(("settings", "key", "shown"), [
    ("jobs: '8'", "settings.jobs", "'8'"),
    ("jobs: 0", "settings.jobs", "0"),
    ("jobs: 2.5", "settings.jobs", "2.5"),
    ("push_retries: -1", "settings.push_retries", "-1"),
    ("tls_verify: 'yes'", "settings.tls_verify", "'yes'"),
    ("format: xyz", "settings.format", "'oci'"),
    ("isolation: bogus", "settings.isolation", "'chroot'"),
    ("build_timeout: -5", "settings.build_timeout", "-5"),
    ("templates: templates", "settings.templates", "'templates'"),
    ("buildah_args: --root /x", "settings.buildah_args", "'--root /x'"),
])
def test_wrong_setting_type(tmp_path: Path, settings: str, key: str, shown: str) -> None:
    message = load_error(tmp_path, f"settings: {{{settings}}}\nimages: {{base: }}\n")
    assert f"'{key}'" in message
    assert shown in message


@pytest.mark.parametrize(("body", "key"), [
    ("{args: {VERSION: [1, 2]}}", "images.nova.args.VERSION"),
    ("{args: [VERSION=1]}", "images.nova.args"),
    ("{labels: {team: {a: b}}}", "images.nova.labels.team"),
    ("{files: [start.sh]}", "images.nova.files"),
    ("{volumes: /cache}", "images.nova.volumes"),
    ("{parent: 3}", "images.nova.parent"),
], ids=["args-list", "args-not-mapping", "labels-mapping", "files-list", "volumes-str",
        "parent-int"])
def test_wrong_image_type(tmp_path: Path, body: str, key: str) -> None:
    message = load_error(tmp_path, f"images:\n  base:\n  nova: {body}\n", image="nova")
    assert f"'{key}'" in message


@pytest.mark.parametrize("value", ["true", "'30'"])
def test_build_timeout_must_be_a_number(tmp_path: Path, value: str) -> None:
    message = load_error(tmp_path, f"settings: {{build_timeout: {value}}}\nimages: {{base: }}\n")
    assert "'settings.build_timeout'" in message


# --- names and references -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Nova-API", "nova api", "nova-", "-nova", "nova/api", "nova:1"])
def test_invalid_image_name(tmp_path: Path, name: str) -> None:
    message = load_error(tmp_path, f"images:\n  {name!r}:\n", image=name)
    assert "invalid image name" in message


@pytest.mark.parametrize(("key", "value"), [
    ("tag", "bad tag"),
    ("tag", ".hidden"),
    ("tag", "-dash"),
    ("tag", "a" * 129),
    ("tag", "v1:2"),
    ("registry", "quay.io/org"),
    ("registry", "host:"),
    ("registry", ":5000"),
    ("registry", "bad_host"),
    ("registry", "host:port"),
    ("namespace", "Kolla"),
    ("namespace", "a//b"),
    ("namespace", "/kolla"),
    ("namespace", "kolla/"),
    ("namespace", "my space"),
    ("prefix", "Centos-"),
    ("prefix", "centos/"),
], ids=lambda v: v if len(v) < 20 else "long")
def test_invalid_reference_part(tmp_path: Path, key: str, value: str) -> None:
    message = load_error(tmp_path, f"settings: {{{key}: {value!r}}}\nimages: {{base: }}\n")
    assert f"invalid settings.{key}" in message
    assert repr(value) in message


@pytest.mark.parametrize(("text", "image"), [
    ('settings: {tag: "v1\\n"}\nimages: {base: }\n', None),
    ('settings: {namespace: "kolla\\n"}\nimages: {base: }\n', None),
    ('settings: {registry: "quay.io\\n"}\nimages: {base: }\n', None),
    ('images: {"base\\n": }\n', "base\n"),
], ids=["tag", "namespace", "registry", "name"])
def test_trailing_newline_is_invalid(tmp_path: Path, text: str, image: str | None) -> None:
    message = load_error(tmp_path, text, image=image)
    assert "invalid" in message


@pytest.mark.parametrize("settings", [
    "registry: 127.0.0.1:5000",
    "registry: my-registry.example.com",
    "namespace: team/kolla",
    "tag: 2024.1-rc_1",
    "tag: A",
    "prefix: centos-binary-",
])
def test_valid_reference_parts_load(tmp_path: Path, settings: str) -> None:
    cfg = config_load.load(write(tmp_path, f"settings: {{{settings}}}\nimages: {{base: }}\n"))
    key, _, value = settings.partition(": ")
    assert getattr(cfg.settings, key) == value


def test_duplicate_image_is_an_error(tmp_path: Path) -> None:
    message = load_error(tmp_path, """\
        images:
          base:
            files: {busybox: /bin/busybox}
          nova:
            parent: base
          base:
        """, image="base")
    assert "base" in message


# --- the good path --------------------------------------------------------------------------


def test_defaults(tmp_path: Path) -> None:
    cfg = config_load.load(write(tmp_path, "images:\n  base:\n"))
    expected = {
        "registry": "localhost:5000",
        "namespace": "kolla",
        "prefix": "",
        "tag": "latest",
        "format": "oci",
            "timestamp": None,
        "jobs": 8,
        "build_timeout": 1800,
        "push_retries": 10,
        "tls_verify": True,
        "isolation": None,
        "build_dir": "build",
        "templates": ["templates"],
        "buildah_args": [],
    }
    settings = dataclasses.asdict(cfg.settings)
    assert {key: settings.get(key, "<missing>") for key in expected} == expected
    assert cfg.vars == {}
    assert cfg.reference("base") == "localhost:5000/kolla/base:latest"


def test_settings_are_read(tmp_path: Path) -> None:
    cfg = config_load.load(write(tmp_path, """\
        settings:
          registry: registry.example.com:443
          namespace: ""
          format: oci
          jobs: 3
          build_timeout: 12.5
          push_retries: 2
          tls_verify: false
          isolation: chroot
          build_dir: out
          templates: [overrides, templates]
          buildah_args: [--storage-driver, vfs]
        vars: {maintainer: me}
        images: {base: }
        """))
    s = cfg.settings
    assert (s.registry, s.namespace, s.format, s.jobs, s.build_timeout, s.push_retries,
            s.tls_verify, s.isolation) == ("registry.example.com:443", "", "oci", 3, 12.5, 2,
                                           False, "chroot")
    assert s.buildah_args == ["--storage-driver", "vfs"]
    assert cfg.vars == {"maintainer": "me"}
    assert cfg.build_dir == tmp_path.resolve() / "out"
    assert cfg.template_dirs == [tmp_path.resolve() / "overrides",
                                 tmp_path.resolve() / "templates"]


def test_paths_are_taken_from_the_file_directory(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    write(tree, "images: {base: }\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = config_load.load(Path("..") / "tree" / "images.yaml")
    assert cfg.root == tree.resolve()
    assert cfg.build_dir == tree.resolve() / "build"
    assert cfg.template_dirs == [tree.resolve() / "templates"]
    assert cfg.source_path("files/x") == tree.resolve() / "files" / "x"


@pytest.mark.parametrize(("settings", "reference"), [
    ({}, "localhost:5000/kolla/nova-api:latest"),
    ({"registry": ""}, "kolla/nova-api:latest"),
    ({"namespace": ""}, "localhost:5000/nova-api:latest"),
    ({"registry": "", "namespace": ""}, "nova-api:latest"),
    ({"prefix": "centos-binary-"}, "localhost:5000/kolla/centos-binary-nova-api:latest"),
    ({"registry": "", "namespace": "", "prefix": "x-", "tag": "2024.1"}, "x-nova-api:2024.1"),
    ({"registry": "quay.io", "namespace": "openstack/kolla", "tag": "v1"},
     "quay.io/openstack/kolla/nova-api:v1"),
])
def test_reference(tmp_path: Path, settings: dict[str, str], reference: str) -> None:
    lines = "".join(f"  {key}: {value!r}\n" for key, value in settings.items())
    text = ("settings:\n" + lines if lines else "") + "images:\n  nova-api:\n"
    cfg = config_load.load(write(tmp_path, text))
    assert cfg.reference("nova-api") == reference


def test_null_body_image_and_defaults(tmp_path: Path) -> None:
    cfg = config_load.load(write(tmp_path, """\
        images:
          base:
            template: custom/base.j2
          cron:
          nova-api: {parent: base}
        """))
    assert list(cfg.images) == ["base", "cron", "nova-api"]
    cron = cfg.images["cron"]
    assert cron.name == "cron"
    assert cron.parent is None
    assert (cron.files, cron.args, cron.vars, cron.labels, cron.volumes) == ({}, {}, {}, {}, [])
    assert cron.template_name == "cron/Dockerfile.j2"
    assert cfg.images["nova-api"].template_name == "nova-api/Dockerfile.j2"
    assert cfg.images["nova-api"].parent == "base"
    assert cfg.images["base"].template_name == "custom/base.j2"


def test_image_fields_are_read(tmp_path: Path) -> None:
    cfg = config_load.load(write(tmp_path, """\
        images:
          base:
            files: {busybox: /bin/busybox}
            args: {VERSION: 1, DEBUG: true, NAME: x, RATIO: 0.5}
            vars: {nested: {a: [1, 2]}}
            labels: {team: infra}
            volumes: [/cache:/cache]
        """))
    base = cfg.images["base"]
    assert base.files == {"busybox": "/bin/busybox"}
    assert base.args == {"VERSION": 1, "DEBUG": True, "NAME": "x", "RATIO": 0.5}
    assert base.vars == {"nested": {"a": [1, 2]}}
    assert base.labels == {"team": "infra"}
    assert base.volumes == ["/cache:/cache"]


# --- a file validated before is not validated again -----------------------------------------

EVERY_KEY = """\
    settings:
      registry: quay.io
      namespace: team/images
      prefix: kolla-
      tag: "2026.1"
      format: docker
      timestamp: 1700000000
      jobs: 4
      build_timeout: 12.5
      push_retries: 3
      push_timeout: 60
      tls_verify: false
      authfile: images.yaml
      isolation: chroot
      cache: registry
      build_dir: out
      templates: [templates, more]
      buildah_args: [--storage-driver, vfs]
      excludes: [^skip]
      args: {A: 1}
      labels: {team: infra, ok: true}
      sign: {key: keys/cosign.key}
      trust: {keys: [cosign.pub, other.pub]}
    vars: {maintainer: me, deep: {list: [1, {x: 2.5}]}}
    profiles: {nova: [^nova]}
    jinja:
      filters: {up: "mymod:up"}
      globals: {now: "mymod:now"}
    kolla: {base: debian, template_overrides: [over.j2], enable_unbuildable: true,
            config_file: kolla.conf, options: {profile: [a, b], debug: true}}
    images:
      base:
      nova:
        template: n.j2
        parent: base
        files: {start.sh: scripts/start.sh}
        args: {WORKERS: 2}
        vars: {port: 8774}
        labels: {tier: api}
        volumes: [/cache:/cache]
        timeout: 60
        sources:
          code: {git: ../nova, ref: stable}
          wheels: {url: "https://example.org/w.tar.gz", sha256: abc}
          docs: {local: docs}
    """


@pytest.mark.parametrize("text", [EVERY_KEY, (Path(__file__).parents[1] / "images.yaml")
                                  .read_text(), "images:\n  base:\n"])
def test_a_file_validated_before_is_read_as_validation_read_it(text: str) -> None:
    data = config_yaml.parse_yaml(Path("images.yaml"), textwrap.dedent(text))
    assert config._file_of(data) == config._adapter().validate_python(data)


@pytest.mark.parametrize("build_dir", ["build", "out/state"])
def test_only_a_changed_file_is_parsed_and_validated_again(tmp_path: Path,
                                                           build_dir: str) -> None:
    text = f"settings: {{build_dir: {build_dir}}}\nimages:\n  base:\n  nova: {{parent: base}}\n"
    path = write(tmp_path, text)
    (tmp_path / build_dir).mkdir(parents=True)  # a run made it
    first = config_load.load(path)
    assert (tmp_path / build_dir / config_note.VALIDATED_NOTE).exists()
    check = ("import sys; from buildlib import config_load; "
             f"loaded = config_load.load({str(path)!r}); "
             "print('yaml' in sys.modules, 'pydantic' in sys.modules); print(repr(loaded))")
    again = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                           check=True).stdout.splitlines()
    assert again == ["False False", repr(first)]  # read from the note, and the same
    path.write_text(text.replace("{parent: base}", "{parnt: base}"))
    assert "unknown key 'images.nova.parnt'" in load_error(tmp_path, path.read_text(), "nova")


def test_field_types_import_no_other_module_of_buildlib() -> None:
    """No import circle: `config` imports `fieldtypes` (to validate), not the reverse."""
    check = ("import sys; import buildlib.fieldtypes; "
             "print(sorted(m for m in sys.modules if m.startswith('buildlib.')))")
    loaded = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert loaded == "['buildlib.fieldtypes']"


# --- what a note may not do: trust a file from elsewhere -------------------------------------

NOTED = "# build_dir: ../other/build\nimages:\n  base:\n"


def forged_note(tree: Path, build_dir: str) -> dict:
    """The note a valid run left for NOTED in `tree`, with code added to its data."""
    write(tree, NOTED)
    (tree / "build").mkdir(exist_ok=True)
    config_load.load(tree / "images.yaml")
    note = json.loads((tree / "build" / config_note.VALIDATED_NOTE).read_text())
    note["data"]["jinja"] = {"globals": {"system": "os:system"}}
    note["data"]["settings"] = {"build_dir": build_dir}
    note["build_dir"] = build_dir
    return note


def test_a_note_from_another_tree_or_user_is_not_trusted(tmp_path: Path) -> None:
    """Another user's note ran `os:system` as a template global: a note counts only from
    build_dir inside the tree, bound to this file in this tree, written by this user."""
    mine, other = tmp_path / "mine", tmp_path / "other"
    mine.mkdir()
    other.mkdir()
    # named by a comment, outside the tree
    note = forged_note(other, "../other/build")
    (other / "build" / config_note.VALIDATED_NOTE).write_text(json.dumps(note))
    write(mine, NOTED)
    assert config_load.load(mine / "images.yaml").jinja.globals == {}
    # copied from the other tree into this one
    (mine / "build").mkdir()
    note = mine / "build" / config_note.VALIDATED_NOTE
    note.write_text(json.dumps(forged_note(other, "build")))
    assert config_load.load(mine / "images.yaml").jinja.globals == {}
    # this tree's own note, edited by another user
    own = mine / "build" / config_note.VALIDATED_NOTE
    own.unlink()
    config_load.load(mine / "images.yaml")
    note = json.loads(own.read_text())
    note["data"]["jinja"] = {"globals": {"system": "os:system"}}
    own.write_text(json.dumps(note))
    os.chown(own, 65534, 65534)
    assert config_load.load(mine / "images.yaml").jinja.globals == {}


# 9 levels of 9 aliases: 382 bytes, 9**9 strings
ALIAS_BOMB = "images: {base: }\nvars:\n  a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" \
    + "".join(f"  {level}: &{level} [{', '.join(['*' + below] * 9)}]\n"
              for below, level in zip("abcdefgh", "bcdefghi", strict=True))


@pytest.mark.parametrize("text, said", [
    (ALIAS_BOMB, "aliases (`*name`) expand the 34 values the file spells out to 490,329,070"),
    ("images: {base: }\nvars:\n  loop: &loop [*loop]\n", "'vars.loop' holds itself"),
])
def test_aliases_that_never_end_are_refused(tmp_path: Path, text: str, said: str) -> None:
    """A 721-byte alias bomb ran `list` for minutes; an alias inside its own anchor
    overflowed the stack."""
    path = write(tmp_path, text)
    result = subprocess.run([str(Path(sys.executable).parent / "imagebake"), "-c", str(path),
                             "list"], capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert said in output and str(path) in output and "fix:" in output, output
    assert "Traceback" not in output


def test_build_dir_may_not_hold_a_control_character(tmp_path: Path) -> None:
    message = load_error(tmp_path, 'settings: {build_dir: "b\\nx"}\nimages: {base: }\n')
    assert "settings.build_dir 'b\\nx' holds a control character" in message


def test_a_missing_trusted_key_file_is_one_error(tmp_path: Path) -> None:
    message = load_error(tmp_path, "settings: {trust: {keys: [a.pub]}}\nimages: {base: }\n")
    assert "settings.trust.keys 'a.pub'" in message and "imagebake keygen" in message
    assert "settings.trust.keys is empty" in load_error(
        tmp_path, "settings: {trust: {keys: []}}\nimages: {base: }\n")
    assert "unknown key 'settings.trust.key'" in load_error(
        tmp_path, "settings: {trust: {key: a.pub}}\nimages: {base: }\n")
    assert "settings.trust.keys 'cosign.pub'" in load_error(  # the default
        tmp_path, "settings: {trust: {}}\nimages: {base: }\n")
    (tmp_path / "a.pub").write_text("")
    loaded = config_load.load(write(tmp_path,
                                    "settings: {trust: {keys: [a.pub]}}\nimages: {base: }\n"))
    assert loaded.settings.trust == config.Trust(keys=["a.pub"])


def test_a_missing_authfile_setting_is_replaced_by_registry_auth_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A CI checkout lacks the authfile the setting names; the job logs in to
    REGISTRY_AUTH_FILE instead."""
    text = "settings: {authfile: secrets/auth.json}\nimages: {base: }\n"
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    assert "settings.authfile 'secrets/auth.json'" in load_error(tmp_path, text)
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "ci-auth.json"))
    assert "REGISTRY_AUTH_FILE" in load_error(tmp_path, text)  # named, but not there
    (tmp_path / "ci-auth.json").write_text('{"auths": {}}')
    assert config_load.load(write(tmp_path, text)).settings.authfile == "secrets/auth.json"
