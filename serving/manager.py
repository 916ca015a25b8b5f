"""The model manager: which versions are loaded, loading new ones and unloading old ones.

It mirrors TF Serving's ServerCore with the availability-preserving policy: the base paths are
polled; a new version is loaded and warmed up and only then routed to; versions that leave the
policy are unloaded after that, once their in-flight requests finish. A version that fails to
load is reported as END with its error and the versions already serving stay.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType

import grpc
import tensorflow as tf

from skewless.serving.config import (
    ConfigError,
    ModelConfig,
    check_base_paths,
    load_model_config_file,
)
from skewless.serving.errors import (
    ServingError,
    failed_precondition,
    invalid_argument,
    not_found,
)
from skewless.serving.servable import LoadedModel
from skewless.serving.versions import find_versions, select_versions, version_fingerprint
from skewless.serving.warmup import warm_up

logger = logging.getLogger("skewless.serving")

# ModelVersionStatus.State names (tensorflow_serving/apis/get_model_status.proto).
START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"


@dataclass(frozen=True)
class VersionStatus:
    """The state of one version, as GetModelStatus reports it."""

    version: int
    state: str
    error_code: grpc.StatusCode = grpc.StatusCode.OK
    error_message: str = ""


@dataclass(frozen=True)
class _Route:
    """What requests for one model resolve against; replaced as a whole on every change."""

    available: MappingProxyType  # version -> LoadedModel
    latest: LoadedModel | None
    labels: MappingProxyType  # label -> version


class _ModelRecord:
    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.loaded: dict[int, LoadedModel] = {}
        self.statuses: dict[int, VersionStatus] = {}
        self.failed: dict[int, tuple[float, int]] = {}


def describe_request(name: str, version: int | None) -> str:
    """TF Serving's ServableRequest debug string: ``Latest(name)`` or ``Specific(name, v)``."""
    return f"Latest({name})" if version is None else f"Specific({name}, {version})"


LoadFn = Callable[[str, int, str], LoadedModel]


def freeze_heap() -> None:
    """Hides every object alive now (loaded graphs, sessions, signatures) from the collector.

    The cyclic collector's full passes then walk only what requests allocate, instead of the
    ~350,000 objects that importing TensorFlow and loading a model leave: measured on a 2-core
    machine, a full pass took 440-540 ms before the freeze (a pause of every thread, under the
    GIL) and under 0.1 ms after.
    """
    gc.collect()
    gc.freeze()


def thaw_heap() -> None:
    """Gives the frozen objects back to the collector (an unloaded version's cycles can go),
    collects, then freezes what is still loaded."""
    gc.unfreeze()
    freeze_heap()


class ModelManager:
    """Loads, serves and unloads the versions of the configured models.

    Args:
        models: The model configs.
        poll_seconds: Seconds between file-system polls; 0 polls once at start.
        session_config: TensorFlow session options for every loaded version.
        enable_warmup: Replay ``assets.extra/tf_serving_warmup_requests`` before serving.
        config_file: The ``--model_config_file`` the models came from, re-read every
            ``config_file_poll_seconds`` when that is positive.
        config_file_poll_seconds: Seconds between re-reads of ``config_file``; 0 never re-reads.
        on_change: Called with the model configs after a version is loaded or unloaded and after
            a config reload (the server completes its request log files then).
    """

    def __init__(
        self,
        models: tuple[ModelConfig, ...],
        *,
        poll_seconds: float = 1.0,
        session_config: tf.compat.v1.ConfigProto | None = None,
        enable_warmup: bool = True,
        config_file: str = "",
        config_file_poll_seconds: float = 0.0,
        on_change: Callable[[tuple[ModelConfig, ...]], None] | None = None,
    ) -> None:
        self._on_change = on_change
        self._records: dict[str, _ModelRecord] = {m.name: _ModelRecord(m) for m in models}
        self._poll_seconds = poll_seconds
        self._session_config = session_config
        self._enable_warmup = enable_warmup
        self._config_file = config_file
        self._config_file_poll_seconds = config_file_poll_seconds if config_file else 0.0
        self._routes: dict[str, _Route] = {}
        self._labels: dict[str, dict[str, int]] = {}
        self._sync_lock = threading.RLock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._unloaders: list[threading.Thread] = []

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Loads the initial versions (blocking), then polls in a background thread.

        Raises:
            ConfigError: A base path is missing or a version label names a version that is not
                available after the initial load.
        """
        check_base_paths(tuple(r.config for r in self._records.values()))
        with self._sync_lock:
            self._sync_all()
            for record in self._records.values():
                if not record.loaded:
                    logger.warning(
                        "No versions of model %s could be loaded from %s",
                        record.config.name,
                        record.config.base_path,
                    )
            try:
                self._apply_labels()
            except ServingError as error:
                raise ConfigError(error.message) from None
        if self._poll_seconds > 0:
            self._start_thread(self._poll_loop, "skewless-model-poller")
        if self._config_file_poll_seconds > 0:
            self._start_thread(self._config_poll_loop, "skewless-config-poller")

    def _start_thread(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def stop(self) -> None:
        """Stops polling and unloads every version."""
        self._stop.set()
        for thread in self._threads:
            thread.join()
        with self._sync_lock:
            for record in self._records.values():
                for version in list(record.loaded):
                    self._unload(record, version, wait=True)
            self._records.clear()
            self._publish()
        for thread in self._unloaders:
            thread.join()

    def _poll_loop(self) -> None:
        while not self._stop.wait(self._poll_seconds):
            try:
                with self._sync_lock:
                    self._sync_all()
            except Exception:  # noqa: BLE001 - polling must survive anything
                logger.exception("Polling the model base paths failed")

    def _config_poll_loop(self) -> None:
        while not self._stop.wait(self._config_file_poll_seconds):
            try:
                self.reload_config_file()
            except Exception:  # noqa: BLE001 - polling must survive anything
                logger.exception("Re-reading %s failed", self._config_file)

    def reload_config_file(self) -> bool:
        """Re-reads ``config_file`` and applies it, as TF Serving's config poll does.

        A file that cannot be read or parsed, or a config that cannot be applied, is logged
        and the models keep serving under the config they have.

        Returns:
            Whether the file was read and applied without error.
        """
        try:
            models = load_model_config_file(self._config_file)
        except ConfigError as error:
            logger.error("Failed to read ModelServerConfig file: %s", error)
            return False
        try:
            self.reload_config(models)
        except ServingError as error:
            logger.error("PollFilesystemAndReloadConfig failed to ReloadConfig: %s",
                         error.message)
            return False
        return True

    def poll_once(self) -> None:
        """Polls the base paths now (tests and reloads)."""
        with self._sync_lock:
            self._sync_all()

    # -- syncing -------------------------------------------------------------------------------

    def _sync_all(self) -> None:
        self._unload_unwanted(self._load_wanted())

    def _load_wanted(self) -> dict[str, set[int]]:
        """Loads the versions each model's policy wants that are not loaded yet.

        Returns:
            The wanted versions of each model, for ``_unload_unwanted``.
        """
        wanted = {}
        for name, record in list(self._records.items()):
            on_disk = find_versions(record.config.base_path)
            wanted[name] = select_versions(on_disk, record.config.version_policy)
            for version in sorted(wanted[name] - set(record.loaded)):
                fingerprint = version_fingerprint(on_disk[version])
                if record.failed.get(version) != fingerprint:
                    self._load(record, version, on_disk[version], fingerprint)
        return wanted

    def _unload_unwanted(self, wanted: dict[str, set[int]]) -> None:
        """Unloads the loaded versions that are no longer wanted, unless none of the wanted
        ones could be loaded (the availability-preserving policy keeps serving then). A
        version a published label points at stays (a refused reload keeps its old labels)."""
        for name, versions in self._staying(wanted).items():
            record = self._records[name]
            versions = versions | set(self._labels.get(name, {}).values())
            for version in sorted(set(record.loaded) - versions):
                self._unload(record, version)

    def _staying(self, wanted: dict[str, set[int]]) -> dict[str, set[int]]:
        """The loaded versions of each model that ``_unload_unwanted`` keeps."""
        staying = {}
        for name, versions in wanted.items():
            loaded = set(self._records[name].loaded)
            staying[name] = loaded & versions if not versions or versions & loaded else loaded
        return staying

    def _load(self, record: _ModelRecord, version: int, path: str, fingerprint) -> None:
        name = record.config.name
        logger.info("Loading servable version {name: %s version: %d} from %s", name, version, path)
        record.statuses[version] = VersionStatus(version, LOADING)
        try:
            model = LoadedModel.load(name, version, path, self._session_config)
        except Exception as error:  # noqa: BLE001 - a bad version must not stop the server
            self._fail(record, version, fingerprint, error, "Loading")
            return
        if self._enable_warmup:
            try:
                count = warm_up(model)
            except Exception as error:  # noqa: BLE001
                model.close(0)
                self._fail(record, version, fingerprint, error, "Warming up")
                return
            if count:
                logger.info("Finished reading %d warmup data for model %s version %d",
                            count, name, version)
        record.failed.pop(version, None)
        record.loaded[version] = model
        record.statuses[version] = VersionStatus(version, AVAILABLE)
        freeze_heap()
        self._publish()
        logger.info("Successfully loaded servable version {name: %s version: %d}", name, version)

    def _fail(self, record, version: int, fingerprint, error: Exception, what: str) -> None:
        code = grpc.StatusCode.UNKNOWN
        if isinstance(error, tf.errors.OpError):
            code = {c.value[0]: c for c in grpc.StatusCode}.get(error.error_code, code)
            message = error.message
        else:
            message = f"{type(error).__name__}: {error}"
        message = message.strip().splitlines()[0] if message.strip() else type(error).__name__
        record.failed[version] = fingerprint
        record.statuses[version] = VersionStatus(version, END, code, message)
        logger.error(
            "%s servable version {name: %s version: %d} failed: %s",
            what, record.config.name, version, message,
        )

    def _unload(self, record: _ModelRecord, version: int, wait: bool = False) -> None:
        model = record.loaded.pop(version)
        record.statuses[version] = VersionStatus(version, UNLOADING)
        self._publish()
        logger.info("Unloading servable version {name: %s version: %d}", model.name, version)

        def finish() -> None:
            model.close()
            record.statuses[version] = VersionStatus(version, END)
            thaw_heap()
            logger.info("Done unloading servable version {name: %s version: %d}",
                        model.name, version)

        if wait:
            finish()
        else:
            thread = threading.Thread(target=finish, name="skewless-unload", daemon=True)
            self._unloaders = [t for t in self._unloaders if t.is_alive()] + [thread]
            thread.start()

    def _apply_labels(self, staying: dict[str, set[int]] | None = None) -> None:
        """Publishes the configs' labels; each must name a loaded version that stays."""
        labels: dict[str, dict[str, int]] = {}
        for name, record in self._records.items():
            serving = set(record.loaded) if staying is None else staying.get(name, set())
            for version in record.config.version_labels.values():
                if version not in serving:
                    raise failed_precondition(_unavailable_label(name, version))
            labels[name] = dict(record.config.version_labels)
        self._labels = labels
        self._publish()

    def _check_label_moves(self, wanted: dict[str, ModelConfig]) -> None:
        """Refuses, before anything loads, a reload that moves an existing label to a version
        that is not available: TF Serving's `UpdateModelVersionLabelMap` runs before the new
        versions load and refuses it even with --allow_version_labels_for_unavailable_models.
        Move a label in two steps: load the version, then point the label at it."""
        for name, config in wanted.items():
            record, current = self._records.get(name), self._labels.get(name, {})
            for label, version in config.version_labels.items():
                moved = label in current and current[label] != version
                if moved and (record is None or version not in record.loaded):
                    raise failed_precondition(_unavailable_label(name, version))

    def _publish(self) -> None:
        routes = {}
        for name, record in self._records.items():
            available = dict(record.loaded)
            latest = available[max(available)] if available else None
            routes[name] = _Route(
                MappingProxyType(available),
                latest,
                MappingProxyType(self._labels.get(name, {})),
            )
        self._routes = routes
        if self._on_change is not None:
            self._on_change(tuple(record.config for record in self._records.values()))

    def reload_config(self, models: tuple[ModelConfig, ...]) -> None:
        """Replaces the model config: adds, updates and removes models (HandleReloadConfig).

        Raises:
            ServingError: INVALID_ARGUMENT for a missing base path; FAILED_PRECONDITION for an
                existing label moved to a version that is not available (nothing applies), or
                a new label on a version that is still not available after loading (the other
                changes apply).
        """
        try:
            check_base_paths(models)
        except ConfigError as error:
            raise invalid_argument(str(error)) from None
        with self._sync_lock:
            wanted = {m.name: m for m in models}
            self._check_label_moves(wanted)
            logger.info("Adding/updating models.")
            for name in list(self._records):
                if name not in wanted:
                    logger.info("Removing model: %s", name)
                    record = self._records.pop(name)
                    for version in list(record.loaded):
                        self._unload(record, version)
            for name, config in wanted.items():
                logger.info(" (Re-)adding model: %s", name)
                record = self._records.get(name)
                if record is None:
                    self._records[name] = _ModelRecord(config)
                else:
                    record.config = config
            # Labels move before the versions they leave unload, and may only name a version
            # that stays: no routing table sends a label to a version that is gone.
            wanted = self._load_wanted()
            try:
                self._apply_labels(self._staying(wanted))
            finally:
                self._unload_unwanted(wanted)
                self._publish()
            logger.info("Finished adding/updating models")

    # -- requests ------------------------------------------------------------------------------

    def acquire(self, name: str, version: int | None = None, label: str = "") -> LoadedModel:
        """Finds the version a request addresses and takes a reference on it.

        The caller must call ``release()`` on the returned model when the request is done.

        Args:
            name: The model name.
            version: A specific version, or None for the latest (or the label's).
            label: A version label, or "".

        Returns:
            The loaded version.

        Raises:
            ServingError: INVALID_ARGUMENT for an unknown label; NOT_FOUND when the model or
                version is not being served.
        """
        for _ in range(3):
            route = self._routes.get(name)
            resolved = version
            if label:
                if route is None or label not in route.labels:
                    raise invalid_argument(f"Unrecognized servable version label: {label}")
                resolved = route.labels[label]
            if route is None:
                break
            model = route.latest if resolved is None else route.available.get(resolved)
            if model is None:
                break
            if model.acquire():
                return model
            # The version started unloading between lookup and acquire: look again.
        raise not_found(f"Servable not found for request: {describe_request(name, resolved)}")

    def status(self, name: str, version: int | None = None, label: str = "") -> list[VersionStatus]:
        """GetModelStatus: the states of a model's versions (newest first).

        Raises:
            ServingError: NOT_FOUND for an unknown model or version; INVALID_ARGUMENT for an
                unknown label.
        """
        record = self._records.get(name)
        if label:
            labels = self._labels.get(name, {})
            if label not in labels:
                raise invalid_argument(f"Unrecognized servable version label: {label}")
            version = labels[label]
        statuses = dict(record.statuses) if record is not None else {}
        if version is not None:
            if version not in statuses:
                raise not_found(f"Could not find version {version} of model {name}")
            return [statuses[version]]
        if not statuses:
            raise not_found(f"Could not find any versions of model {name}")
        return [statuses[v] for v in sorted(statuses, reverse=True)]

    def model_names(self) -> list[str]:
        """The configured model names."""
        return list(self._records)

    def available_versions(self, name: str) -> list[int]:
        """The versions of a model now serving, ascending."""
        route = self._routes.get(name)
        return sorted(route.available) if route is not None else []


def _unavailable_label(name: str, version: int) -> str:
    return (f"Request to assign label to version {version} of model {name}, which is not "
            "currently available for inference.")
