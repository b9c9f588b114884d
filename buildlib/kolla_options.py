"""kolla-build's options for a `kolla:` tree, parsed by kolla's own code (its defaults, a
kolla-build.conf, `kolla.options`); what of them imagebake does not follow; kolla's
profiles and its unbuildable images."""

from __future__ import annotations

import configparser
import re
import tempfile
from pathlib import Path
from typing import Any

from buildlib.config import Config
from buildlib.errors import InputError

# kolla-build options that imagebake's settings decide, so that references agree.
FROM_SETTINGS = {"registry": "registry", "namespace": "namespace", "tag": "tag",
                 "image_name_prefix": "prefix"}


# kolla-build options imagebake does not follow, and what to use instead where there is one.
NOT_USED = {
    **dict.fromkeys(("engine", "podman_base_url", "buildkit", "buildkit_builder", "cache",
                     "debug", "quiet", "keep", "logs_dir", "work_dir", "list_images",
                     "list_dependencies", "save_dependency", "summary", "summary_json_file",
                     "template_only", "squash", "squash_cleanup", "squash_tmp_dir",
                     "network_mode", "retries", "allowed_to_fail", "skip_existing",
                     "skip_parents"), "imagebake does not use it"),
    "push": "use `imagebake push`", "push_threads": "imagebake does not use it",
    "threads": "use `-n N` or settings.jobs", "pull": "imagebake pulls a base only when "
    "storage lacks it", "timeout": "imagebake's downloads keep their own deadline",
    "platform": "use settings.platforms", "format": "use settings.format",
    "regex": "use `images=`", "profile": "use `profile=`",
    "enable_unbuildable": "use kolla.enable_unbuildable",
    "template_override": "use kolla.template_overrides",
}


SOURCE_OPTIONS = {"type", "location", "reference", "enabled", "sha256", "version"}


def parsed(config: Config) -> Any:
    """kolla-build's options, parsed by kolla's own code: its defaults, then the
    kolla-build.conf named by `kolla.config_file`, then `kolla.options`."""
    from kolla.common import config as kolla_config
    from oslo_config import cfg

    source = config.kolla
    assert source is not None
    for option in source.options:
        if option.replace("-", "_") in FROM_SETTINGS:
            setting = FROM_SETTINGS[option.replace("-", "_")]
            raise InputError(config.path, f"kolla.options.{option}: set by settings.{setting}",
                             fix=f"set `settings.{setting}` instead (kolla's `namespace` "
                             "is `registry/namespace`)")
    files = []
    if source.config_file:
        path = config.source_path(source.config_file)
        if not path.is_file():
            raise InputError(config.path, f"kolla.config_file: {path} does not exist",
                             fix="correct the path (relative to the directory of images.yaml)")
        files.append(str(path))
    conf = cfg.ConfigOpts()
    with tempfile.TemporaryDirectory(prefix="imagebake-kolla-") as tmp:
        if source.options:
            options_file = Path(tmp) / "options.conf"
            options_file.write_text(_ini(source.options), encoding="utf-8")
            files.append(str(options_file))
        try:
            kolla_config.parse(conf, ["--base", source.base, "--template-only"],
                               prog="kolla-build",
                               default_config_files=files)
        except (cfg.Error, ValueError) as err:
            raise InputError(config.path, f"kolla: kolla-build's options refuse it: {err}",
                             fix="correct kolla.base, kolla.options or kolla.config_file") \
                from None
        except SystemExit:  # oslo prints the problem (e.g. an invalid --base choice) and exits
            raise InputError(config.path, f"kolla.base: {source.base!r} is not a base "
                             "kolla-build knows", fix="use one of: "
                             + ", ".join(kolla_config.BASE_OS_DISTRO)) from None
        for option in source.options:
            try:
                conf[option.replace("-", "_")]
            except cfg.NoSuchOptError:
                raise InputError(config.path, f"kolla.options.{option}: kolla-build has no "
                                 "such option", fix="correct its name (see `kolla-build "
                                 "--help`)") from None
        return conf


def _ini(options: dict[str, Any]) -> str:
    def word(value: Any) -> str:
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, list):
            return ",".join(word(v) for v in value)
        return str(value)
    return "[DEFAULT]\n" + "".join(f"{k.replace('-', '_')} = {word(v)}\n"
                                   for k, v in options.items())


def not_used(config: Config, conf: Any, images: set[str]) -> list[str]:
    """What kolla-build.conf and kolla.options say that imagebake does not follow: options
    it leaves to kolla-build, options kolla-build does not know, sections naming no image."""

    source = config.kolla
    assert source is not None
    said: list[tuple[str, str, str]] = [  # (where, section, option)
        ("images.yaml kolla.options", "DEFAULT", option.replace("-", "_"))
        for option in source.options]
    if source.config_file:
        path = config.source_path(source.config_file)
        parser = configparser.ConfigParser(interpolation=None, strict=False,
                                           default_section="\0")
        try:
            parser.read(path, encoding="utf-8")
        except configparser.Error:
            return []  # oslo read it; what it refused was said there
        said += [(str(path), section, option) for section in parser.sections()
                 for option in parser[section]]
    warnings = []
    for where, section, option in said:
        problem = _option_problem(conf, images, section, option)
        if problem:
            place = f"[{section}] {option}" if option else f"[{section}]"
            warnings.append(f"{where}: {place}: {problem}")
    return list(dict.fromkeys(warnings))


def _option_problem(conf: Any, images: set[str], section: str, option: str) -> str | None:
    if section == "DEFAULT":
        if option in NOT_USED:
            return NOT_USED[option]
        if option in FROM_SETTINGS:
            return f"settings.{FROM_SETTINGS[option]} decides it"
        return None if option in conf else "kolla-build has no such option"
    if section == "profiles" or section.endswith("-user"):
        return None
    if section in images or any(section.startswith(f"{image}-{kind}-")
                                for image in images for kind in ("plugin", "additions")):
        return None if option in SOURCE_OPTIONS else (
            "not a source option (" + ", ".join(sorted(SOURCE_OPTIONS)) + ")")
    return "names no image of Kolla's tree, nor a plugin or addition of one"


def unbuildable(conf: Any, source: Any) -> list[str]:
    """kolla's unbuildable images for this base and arch, as exclude patterns."""
    if source.enable_unbuildable:
        return []
    from kolla.image.unbuildable import UNBUILDABLE_IMAGES

    element = rf"({conf.base}|{conf.base_arch})"
    tag_re = re.compile(rf"^{element}(\+{element})*$")
    names = sorted({name for key, names in UNBUILDABLE_IMAGES.items() if tag_re.match(key)
                    for name in names})
    return [f"^{re.escape(name)}$" for name in names]


def profiles(conf: Any) -> dict[str, list[str]]:
    return {name: list(conf.profiles[name]) for name in conf.profiles}
