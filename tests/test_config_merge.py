"""Override files and --set: images.override.yaml (or the -c files) merged on top of
images.yaml, as bake merges docker-bake.override.hcl; one-off `--set IMAGE.FIELD=VALUE`;
errors naming the file and line, or the --set, a value came from."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from buildlib import config, config_load, config_note
from buildlib.errors import InputError

MAIN = """\
settings:
  tag: v1
  args: {A: 1, B: 1}
  excludes: [old]
images:
  base:
  nova-api:
    parent: base
    args: {WORKERS: 2}
    volumes: [/a:/a, /b:/b]
  nova-cron:
    parent: base
  keystone:
    parent: base
"""


def tree(tmp_path: Path, override: str | None = None, main: str = MAIN) -> Path:
    (tmp_path / config.CONFIG_FILE).write_text(textwrap.dedent(main))
    if override is not None:
        (tmp_path / config.OVERRIDE_FILE).write_text(textwrap.dedent(override))
    return tmp_path


def load(folder: Path, *sets: str) -> config.Config:
    return config_load.load(config.Sources.default(folder, sets))


def error(folder: Path, *sets: str) -> InputError:
    with pytest.raises(InputError) as info:
        load(folder, *sets)
    assert "fix:" in str(info.value)
    return info.value


# --- override files ---------------------------------------------------------------------


def test_an_override_merges_maps_key_by_key_and_replaces_lists_and_scalars(
        tmp_path: Path) -> None:
    cfg = load(tree(tmp_path, """\
        settings:
          tag: v2
          args: {B: 2, C: 3}
          excludes: [older]
        images:
          nova-api:
            args: {EXTRA: x}
            volumes: [/c:/c]
          nova-cron:        # an empty value adds nothing
          horizon: {parent: base}
        """))
    assert cfg.settings.tag == "v2"
    assert cfg.settings.args == {"A": 1, "B": 2, "C": 3}
    assert cfg.settings.excludes == ["older"]
    api = cfg.images["nova-api"]
    assert (api.parent, api.args, api.volumes) == ("base", {"WORKERS": 2, "EXTRA": "x"},
                                                  ["/c:/c"])
    assert cfg.images["nova-cron"].parent == "base"
    assert cfg.images["horizon"].parent == "base"
    assert cfg.sources.files == (tmp_path / "images.yaml", tmp_path / "images.override.yaml")


def test_no_override_file_loads_images_yaml_alone(tmp_path: Path) -> None:
    cfg = load(tree(tmp_path))
    assert cfg.sources.files == (tmp_path / "images.yaml",)
    assert cfg.settings.tag == "v1"


def test_named_files_merge_in_order_and_the_override_file_is_not_read(tmp_path: Path) -> None:
    """As bake: docker-bake.override.hcl counts only when no file is named."""
    tree(tmp_path, "settings: {tag: from-override}\n")
    (tmp_path / "ci.yaml").write_text("settings: {tag: ci, namespace: ci}\n")
    (tmp_path / "late.yaml").write_text("settings: {tag: late}\n")
    cfg = config_load.load(config.Sources((tmp_path / "images.yaml", tmp_path / "ci.yaml",
                                      tmp_path / "late.yaml")))
    assert (cfg.settings.tag, cfg.settings.namespace) == ("late", "ci")
    assert config_load.load(tmp_path / "images.yaml").settings.tag == "v1"


def test_an_empty_override_file_adds_nothing(tmp_path: Path) -> None:
    assert load(tree(tmp_path, "# nothing yet\n")).settings.tag == "v1"


def test_paths_in_an_override_are_taken_from_images_yaml_folder(tmp_path: Path) -> None:
    sub = tmp_path / "sub"
    sub.mkdir()
    tree(tmp_path)
    (sub / "extra.yaml").write_text("settings: {build_dir: out}\n")
    cfg = config_load.load(config.Sources((tmp_path / "images.yaml", sub / "extra.yaml")))
    assert cfg.build_dir == tmp_path / "out"


# --- errors name the file and line ------------------------------------------------------


def test_a_bad_value_in_the_override_names_the_override_and_its_line(tmp_path: Path) -> None:
    err = error(tree(tmp_path, """\
        images:
          nova-api:
            labels: {tier: api}
            timeout: soon
        """))
    assert err.path == tmp_path / "images.override.yaml"
    assert err.image == "nova-api"
    assert err.problem.startswith("line 4: 'images.nova-api.timeout'")


def test_an_unknown_key_in_the_override_names_its_line(tmp_path: Path) -> None:
    err = error(tree(tmp_path, "settings:\n  tag: v2\n  tagg: v3\n"))
    assert err.path == tmp_path / "images.override.yaml"
    assert err.problem == "line 3: unknown key 'settings.tagg'"


def test_a_bad_value_in_images_yaml_names_its_line_there(tmp_path: Path) -> None:
    main = MAIN.replace("  tag: v1\n", "  tag: v1\n  jobs: many\n")
    err = error(tree(tmp_path, "settings: {tag: v2}\n", main=main))
    assert err.path == tmp_path / "images.yaml"
    assert err.problem.startswith("line 3: 'settings.jobs'")


def test_a_value_the_override_replaced_is_blamed_on_the_override(tmp_path: Path) -> None:
    main = MAIN.replace("    volumes: [/a:/a, /b:/b]\n", "    volumes: [/a:/a, 7]\n")
    (tmp_path / "images.yaml").write_text(main)
    assert "volumes.1" in error(tmp_path).problem  # images.yaml alone is wrong
    err = error(tree(tmp_path, "images:\n  nova-api:\n    volumes:\n      - /c:/c\n      - 8\n",
                     main=main))
    assert (err.path, err.problem[:7]) == (tmp_path / "images.override.yaml", "line 5:")


def test_checks_after_validation_name_the_file_and_line_too(tmp_path: Path) -> None:
    err = error(tree(tmp_path, "settings:\n  jobs: 2\n  tag: -bad\n"))
    assert (err.path, err.problem) == (tmp_path / "images.override.yaml",
                                       "line 3: invalid settings.tag '-bad'")
    (tmp_path / "images.override.yaml").unlink()
    err = error(tmp_path, "nova-api.vars.image=x")
    assert err.problem.startswith("--set 'nova-api.vars.image=x': images.nova-api.vars.image:")
    (tmp_path / "images.override.yaml").write_text("settings:\n  excludes: [ok, '(']\n")
    assert error(tmp_path).problem.startswith("line 2: settings.excludes: '(' is not a regular")


def test_malformed_yaml_in_the_override_names_it(tmp_path: Path) -> None:
    err = error(tree(tmp_path, "images:\n  nova-api: {args: [\n"))
    assert err.path == tmp_path / "images.override.yaml"
    assert "malformed YAML at line" in err.problem


def test_an_override_that_is_a_list_is_refused(tmp_path: Path) -> None:
    assert error(tree(tmp_path, "- base\n")).path == tmp_path / "images.override.yaml"


# --- --set --------------------------------------------------------------------------------


def test_set_changes_the_field_of_every_image_its_glob_matches(tmp_path: Path) -> None:
    cfg = load(tree(tmp_path), "nova-*.args.WORKERS=8", "settings.tag=rc1",
               "images.keystone.labels.org.opencontainers.image.version=1.0",
               "nova-api.volumes=[/x:/x]")
    assert cfg.images["nova-api"].args == {"WORKERS": 8}
    assert cfg.images["nova-cron"].args == {"WORKERS": 8}
    assert cfg.images["keystone"].args == {}
    assert cfg.images["keystone"].labels == {"org.opencontainers.image.version": 1.0}
    assert cfg.images["nova-api"].volumes == ["/x:/x"]
    assert cfg.settings.tag == "rc1"


def test_set_applies_after_the_override_and_in_order(tmp_path: Path) -> None:
    cfg = load(tree(tmp_path, "images: {nova-api: {args: {WORKERS: 4}}}\n"),
               "nova-*.args.WORKERS=8", "nova-api.args.WORKERS='016'")
    assert cfg.images["nova-api"].args == {"WORKERS": "016"}
    assert cfg.images["nova-cron"].args == {"WORKERS": 8}


def test_set_without_a_value_is_an_empty_string(tmp_path: Path) -> None:
    assert load(tree(tmp_path), "settings.prefix=").settings.prefix == ""


@pytest.mark.parametrize("arg, said", [
    ("nova-api.args.WORKERS", "not a PATH=VALUE assignment"),
    ("nova-api=1", "not a PATH=VALUE assignment"),
    ("nova-api..args=1", "not a PATH=VALUE assignment"),
    ("glance-*.args.X=1", "'glance-*' matches no image under `images:`"),
    ("images.nova-api=1", "names an image but no field of it"),
    ("nova-api.parent.x=1", "'images.nova-api.parent' is not a mapping"),
    ("nova-api.args.X=[1", "the value is not YAML"),
    ("nova-api.timeout=later", "'images.nova-api.timeout': Input should be a valid integer"),
    ("settings.tagg=v2", "unknown key 'settings.tagg'"),
])
def test_a_bad_set_names_the_set(tmp_path: Path, arg: str, said: str) -> None:
    err = error(tree(tmp_path), arg)
    assert err.problem.startswith(f"--set {arg!r}: "), err.problem
    assert said in err.problem


def test_set_may_name_one_of_kollas_images_that_images_yaml_does_not(tmp_path: Path) -> None:
    sets = config.Sources.default(tree(tmp_path), ("nova-api.args.X=1", "glance.args.X=2"))
    data, _ = config_load._merged(sets, [(tmp_path / "images.yaml").read_text() + "kolla: {}\n"])
    assert data["images"]["glance"] == {"args": {"X": 2}}


# --- the validation note ----------------------------------------------------------------


def test_an_edit_of_the_override_or_another_set_is_never_missed(tmp_path: Path) -> None:
    tree(tmp_path, "settings: {tag: v2}\n")
    (tmp_path / "build").mkdir()
    assert load(tmp_path).settings.tag == "v2"
    assert (tmp_path / "build" / config_note.VALIDATED_NOTE).exists()
    (tmp_path / "images.override.yaml").write_text("settings: {tag: v3}\n")
    assert load(tmp_path).settings.tag == "v3"
    assert load(tmp_path, "settings.tag=v4").settings.tag == "v4"
    assert load(tmp_path, "settings.tag=v5").settings.tag == "v5"
    assert load(tmp_path).settings.tag == "v3"
    (tmp_path / "images.override.yaml").unlink()
    assert load(tmp_path).settings.tag == "v1"


def test_a_merged_tree_noted_valid_is_not_parsed_again(tmp_path: Path) -> None:
    tree(tmp_path, "settings: {tag: v2}\n")
    (tmp_path / "build").mkdir()
    first = load(tmp_path, "nova-*.args.W=8")
    check = ("import sys; from pathlib import Path; from buildlib import config, config_load; "
             f"c = config_load.load(config.Sources.default(Path({str(tmp_path)!r}), "
             "('nova-*.args.W=8',))); "
             "print('yaml' in sys.modules, 'pydantic' in sys.modules); print(repr(c))")
    again = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                           check=True).stdout.splitlines()
    assert again == ["False False", repr(first)]


# --- printing the merged tree -----------------------------------------------------------


def test_the_printed_tree_loads_as_the_merged_one(tmp_path: Path) -> None:
    cfg = load(tree(tmp_path, "images: {nova-api: {args: {EXTRA: x}}}\n"), "settings.tag=rc1")
    printed = config.merged_yaml(cfg)
    assert printed.startswith(f"# merged from:\n# {tmp_path / 'images.yaml'}\n"
                              f"# {tmp_path / 'images.override.yaml'}\n# --set settings.tag=rc1\n")
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "images.yaml").write_text(printed)
    again = config_load.load(alone / "images.yaml")
    assert (again.settings, again.images) == (cfg.settings, cfg.images)
    assert yaml.safe_load(printed)["images"]["nova-api"]["args"] == {"WORKERS": 2, "EXTRA": "x"}
