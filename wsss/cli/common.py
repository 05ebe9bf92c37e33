"""What every command shares: the Hydra entry point, errors as one line, the device, the run
folder, the dataset split and the classifier."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from wsss import distributed
from wsss.cli.config import (
    ClassifierCommand,
    TrainCommand,
    compose_config,  # noqa: F401 (scripts of earlier versions import it from here)
    config_dir,
    register_configs,
    to_config,
)
from wsss.data import LabelledSplit
from wsss.data.screen import BadImages
from wsss.devices import resolve_device
from wsss.engine.classifiers import checkpoint_or_cached, train_and_save
from wsss.errors import ConfigError, WsssError, write_failure
from wsss.io import write_text
from wsss.models import LoadedClassifier, ModelSpec

log = logging.getLogger("wsss")


def command(
    config_name: str, finished: str | None = None
) -> Callable[[Callable], Callable[[], Any]]:
    """Decorator: make ``run(config, out_dir)`` the Hydra application ``config_name``.

    ``config`` is the composed config as objects (see :mod:`wsss.cli.config`), ``out_dir`` the
    Hydra run (or multirun job) folder, where every output goes. A WsssError is printed as one
    clear line, without a traceback, and the process exits with status 2.

    A folder holding another command's run is refused; so is a folder holding a ``finished``
    run (that file exists) of this command made with other settings, whose outputs the run
    would overwrite. (``generate_masks`` resumes, and refuses other settings, per image.)
    """

    def decorator(run: Callable[[Any, Path], Any]) -> Callable[[], Any]:
        register_configs()

        @hydra.main(version_base="1.3", config_path=config_dir(), config_name=config_name)
        @functools.wraps(run)
        def main(cfg: DictConfig):
            from hydra.core.hydra_config import HydraConfig

            out = Path(HydraConfig.get().runtime.output_dir)
            earlier = (out / ".hydra" / "config.yaml").is_file()
            try:
                if earlier:
                    _check_earlier_run(cfg, out, config_name, finished)
                else:
                    _record_config(cfg, out / ".hydra")
                result = run(to_config(cfg), out)
                if earlier:  # resumed with the same settings: the record is brought up to date
                    _record_config(cfg, out / ".hydra")
                return result
            except OSError as exc:  # a write outside wsss's own writers (logs, Hydra's files)
                failure = write_failure(exc.filename or "a file of the run", exc)
                if failure is None:
                    raise
                _exit_with(failure)
            except WsssError as exc:
                _exit_with(exc)
            except KeyboardInterrupt:
                kept = _KEPT_WHEN_INTERRUPTED.get(config_name, "every finished epoch")
                print(
                    f"\ninterrupted; finished work is kept ({kept}): rerun the same command "
                    f"with hydra.run.dir={out} to resume",
                    file=sys.stderr,
                )
                sys.exit(130)
            finally:
                distributed.shutdown()

        @functools.wraps(run)
        def entry():
            failure = _unwritable_run_folder(sys.argv[1:], config_name)
            if failure is not None:
                print(f"error: {failure}", file=sys.stderr)
                sys.exit(2)
            return main()

        return entry

    return decorator


def _unwritable_run_folder(argv: list[str], config_name: str) -> str | None:
    """Why the run folder named on the command line (or the default ``outputs/<command>``
    under the working directory) cannot be written, or None. Checked before Hydra starts,
    whose own failure there is a logging traceback."""
    import os

    named = [a.split("=", 1)[1] for a in argv if a.split("=", 1)[0].lstrip("+") == "hydra.run.dir"]
    if "-m" in argv or "--multirun" in argv or any(a.startswith("-") for a in argv):
        return None  # sweeps, --help, --cfg: Hydra's own folders or none
    folder = Path(named[-1]).expanduser() if named else Path("outputs") / config_name
    if folder.exists() and not folder.is_dir():
        return f"{folder}: the run folder is a file; pick another one (hydra.run.dir=...)"
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing}: a file is in the way of the run folder {folder}; move it"
    if not os.access(existing, os.W_OK | os.X_OK):
        return (
            f"{existing}: cannot write the run folder {folder} here (read-only or no "
            "permission); pick a folder you can write to (hydra.run.dir=...)"
        )
    return None


#: what a command keeps of an interrupted run
_KEPT_WHEN_INTERRUPTED = {
    "generate_masks": "every labelled image; a classifier in training, every finished epoch",
    "explain": "a classifier in training, every finished epoch",
    "evaluate": "nothing: scoring starts again",
    "export_review": "nothing: the export starts again",
}

#: settings that change how a command runs, not what it makes
_RUNNING_ONLY = ("device", "num_workers", "batch_size")


def _check_earlier_run(cfg: DictConfig, out: Path, config_name: str, finished: str | None):
    """Refuse ``out`` when it holds another command's run, or a ``finished`` run of this one
    made with other settings (the keys that differ are named)."""
    hydra_record = out / ".hydra" / "hydra.yaml"
    earlier_name = None
    if hydra_record.is_file():
        earlier_name = OmegaConf.load(hydra_record).hydra.job.get("config_name")
    if earlier_name and earlier_name != config_name:
        raise ConfigError(
            f"{out}: holds a {earlier_name} run; give this {config_name} run its own folder "
            "(hydra.run.dir=...)"
        )
    if finished is None or not (out / finished).is_file():
        return
    before = _flat(OmegaConf.to_container(OmegaConf.load(out / ".hydra" / "config.yaml")))
    now = _flat(OmegaConf.to_container(cfg, resolve=False))
    changed = sorted(
        key
        for key in before.keys() | now.keys()
        if before.get(key) != now.get(key) and key.split(".")[0] not in _RUNNING_ONLY
    )
    if changed:
        raise ConfigError(
            f"{out}: holds a finished {config_name} run made with other settings "
            f"({', '.join(changed)}); its {finished} would be overwritten: give this run its own "
            "folder (hydra.run.dir=...) or delete that one"
        )


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        return {
            k: v for key, child in node.items() for k, v in _flat(child, f"{prefix}{key}.").items()
        }
    return {prefix.rstrip("."): node}


def _record_config(cfg: DictConfig, folder: Path) -> None:
    """Write Hydra's record of a run (config.yaml, hydra.yaml, overrides.yaml) into ``folder``;
    the commands set ``hydra.output_subdir`` to null and call this themselves, so that a run
    refused in a folder holding an earlier one does not overwrite that run's record."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    folder.mkdir(parents=True, exist_ok=True)
    for name, node in (("config.yaml", cfg), ("hydra.yaml", OmegaConf.create({"hydra": hydra_cfg})),
                       ("overrides.yaml", hydra_cfg.overrides.task)):  # fmt: skip
        write_text(folder / name, OmegaConf.to_yaml(node))


def _exit_with(error: WsssError) -> None:
    log.error("%s", error)
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)


def setup_device(name: str, out_dir: Path) -> torch.device:
    """The device ``name``; under ``torchrun``, also join the process group (one GPU per local
    rank) and check that every rank writes to the same run folder."""
    device = distributed.init_from_env(resolve_device(name))
    if distributed.world_size() > 1:
        distributed.same_on_all_ranks(
            str(out_dir),
            "the run folder",
            "Under torchrun, pass hydra.run.dir=<folder> so that every process uses the same one.",
        )
    return device


def load_split(config, split: str, allow_unlabelled: bool = False) -> LabelledSplit:
    """Split ``split`` of the command's dataset."""
    return config.dataset.load(
        split, cache_dir=Path(config.cache_dir).expanduser(), allow_unlabelled=allow_unlabelled
    )


def _training(config: TrainCommand, device: torch.device, bad: BadImages) -> dict:
    return {
        "train_split": config.train_split,
        "val_split": config.val_split,
        "cache_dir": Path(config.cache_dir).expanduser(),
        "device": device,
        "bad": bad,
        "amp": config.amp,
        "num_workers": config.num_workers,
        "seed": config.seed,
    }


def train(config: TrainCommand, path: Path, device: torch.device, bad: BadImages):
    """Train the command's classifier and save it to ``path``."""
    return train_and_save(
        config.dataset, config.model, config.train, path, **_training(config, device, bad)
    )


def classifier_for(
    config: ClassifierCommand, device: torch.device, bad: BadImages
) -> tuple[LoadedClassifier, Path, bool]:
    """The command's ``checkpoint``, or a classifier trained once as configured and cached (bad
    images met while training go to ``bad``). Returns (classifier, path, trained in this run).

    A model set on the command line (``model=...``, ``model.<key>=...``) that contradicts the
    checkpoint's is refused: the checkpoint decides the model, so the setting would be silently
    ignored while the run's record says otherwise."""
    found = checkpoint_or_cached(
        config.checkpoint,
        config.dataset,
        config.model,
        config.train,
        **_training(config, device, bad),
    )
    if config.checkpoint and _model_overridden():
        check_model_matches(config.model, found[0].spec, found[1])
    return found


def _model_overridden() -> bool:
    """Whether this command's line sets the ``model`` group or one of its keys."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return False
    keys = (o.split("=", 1)[0].lstrip("+~") for o in HydraConfig.get().overrides.task)
    return any(key == "model" or key.startswith("model.") for key in keys)


def check_model_matches(asked: ModelSpec, stored: ModelSpec, checkpoint: Path) -> None:
    """Refuse a model setting that differs from the checkpoint's (backbone or its arguments)."""

    def described(spec: ModelSpec) -> str:
        return spec.backbone + (f" {dict(spec.backbone_kwargs)}" if spec.backbone_kwargs else "")

    if (asked.backbone, dict(asked.backbone_kwargs)) != (stored.backbone, stored.backbone_kwargs):
        raise ConfigError(
            f"{checkpoint}: the checkpoint holds model {described(stored)} but the command line "
            f"sets {described(asked)}; leave model out (the checkpoint decides it) or give a "
            "checkpoint of that model"
        )
