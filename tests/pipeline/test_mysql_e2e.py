"""MLMD on a real MariaDB: the pipeline, the registry and a promotion against a private server
(Debian's mariadb-server, started here on 127.0.0.1 and a free port, stopped afterwards)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from skewless.cli import main
from tests.conftest import sample_config_dict, write_config, write_sample

pytestmark = pytest.mark.e2e

PASSWORD_ENV = "SKEWLESS_TEST_MLMD_PASSWORD"
PASSWORD = "registry-pw-7"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mariadb():
    """A private mysqld with database `mlmd` and user `skewless`: (port, datadir)."""
    # mysqld runs as the mysql user, which cannot enter pytest's 0700 temp folders.
    root = Path(tempfile.mkdtemp(prefix="skewless-mariadb-", dir="/tmp"))
    root.chmod(0o755)
    datadir, tmpdir = root / "data", root / "tmp"
    for folder in (datadir, tmpdir):
        folder.mkdir()
        shutil.chown(folder, "mysql", "mysql")
    # Not the TMPDIR a pipeline test left in this process's environment: mysql cannot write it.
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    installed = subprocess.run(["mysql_install_db", "--no-defaults", "--user=mysql",
                                f"--datadir={datadir}"], capture_output=True, text=True, env=env)
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-2000:]
    port, sock = _free_port(), datadir / "sock"
    server = subprocess.Popen(
        ["mysqld_safe", "--no-defaults", "--user=mysql", f"--datadir={datadir}",
         "--bind-address=127.0.0.1", f"--port={port}", f"--socket={sock}",
         f"--pid-file={datadir}/mysqld.pid", f"--log-error={datadir}/error.log",
         f"--tmpdir={tmpdir}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env)
    admin = ["mysqladmin", "--no-defaults", f"--socket={sock}", "-uroot"]
    try:
        deadline = time.monotonic() + 60
        while subprocess.run([*admin, "ping"], capture_output=True).returncode != 0:
            assert server.poll() is None, (datadir / "error.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "MariaDB did not start"
            time.sleep(0.5)
        sql = ("CREATE DATABASE mlmd; "
               f"CREATE USER 'skewless'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'; "
               "GRANT ALL ON mlmd.* TO 'skewless'@'127.0.0.1';")
        subprocess.run(["mysql", "--no-defaults", f"--socket={sock}", "-uroot", "-e", sql],
                       check=True, capture_output=True)
        yield port
    finally:
        subprocess.run([*admin, "shutdown"], capture_output=True)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
            server.wait()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def mysql_config(mariadb, tmp_path_factory):
    """A config whose MLMD is the MariaDB above, its password named by an environment variable."""
    workdir = tmp_path_factory.mktemp("mysql")
    data = write_sample(workdir / "data" / "data.csv", 1000)
    raw = sample_config_dict(workdir, data, model={"train_steps": 50, "eval_steps": 5},
                             evaluation={"thresholds": [{"metric": "AUC", "lower_bound": 0.0}],
                                         "slices": []})
    raw["metadata"] = {"mysql": {"host": "127.0.0.1", "port": mariadb, "database": "mlmd",
                                 "user": "skewless", "password_env": PASSWORD_ENV}}
    return write_config(workdir / "taxi.yaml", raw), workdir


def _cli(*args: str, **env):
    return CliRunner(env=env).invoke(main, list(args), catch_exceptions=False)


def test_the_whole_flow_on_mariadb(mysql_config, monkeypatch):
    from skewless.pipeline.config import load_config
    from skewless.pipeline.promotion import history
    from skewless.pipeline.store import connect

    path, workdir = mysql_config
    assert PASSWORD not in path.read_text()
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    monkeypatch.setenv("TMPDIR", str(workdir))
    run = _cli("run", "--config", str(path))
    assert run.exit_code == 0, run.output
    assert "blessed: yes" in run.output
    listed = json.loads(_cli("models", "list", "--config", str(path), "--json").output)
    [model] = listed
    assert model["pushed"] and model["blessed"] and model["rows"] == 1000
    version = model["version"]
    shown = json.loads(_cli("models", "show", "--config", str(path), str(version),
                            "--json").output)
    assert shown["config"]["text"] == path.read_text()  # what the run was given
    assert "TransformGraph" in {row["artifact"] for row in shown["lineage"]}
    promoted = _cli("models", "promote", "--config", str(path), str(version), "--label",
                    "stable")
    assert promoted.exit_code == 0, promoted.output
    config = load_config(path, check_data=False)
    [move] = history(connect(config), config.pipeline.name)
    assert (move.label, move.version, move.previous_version) == ("stable", version, None)
    assert f"value: {version}" in (config.serving.push_dir / "models.config").read_text()


def test_an_unset_password_variable_is_one_line(mysql_config, monkeypatch):
    path, _ = mysql_config
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    result = _cli("models", "list", "--config", str(path))
    assert result.exit_code == 1
    assert result.output == (f"Error: {path}: metadata.mysql.password_env: the environment "
                             f"variable {PASSWORD_ENV} is not set\n")


def test_a_password_in_the_yaml_is_refused(mysql_config, tmp_path):
    import yaml

    path, _ = mysql_config
    raw = yaml.safe_load(path.read_text())
    raw["metadata"]["mysql"]["password"] = PASSWORD
    bad = write_config(tmp_path / "bad.yaml", raw)
    result = _cli("models", "list", "--config", str(bad))
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {bad}: metadata.mysql.password:")
    assert len(result.output.splitlines()) == 1


@pytest.mark.parametrize("command", [("run",), ("models", "list"),
                                     ("manifests", "--output-dir", "manifests")])
def test_a_server_that_refuses_the_connection_is_one_line(mysql_config, mariadb, monkeypatch,
                                                          tmp_path, command):
    import yaml

    path, _ = mysql_config
    raw = yaml.safe_load(path.read_text())
    monkeypatch.setenv(PASSWORD_ENV, "not-the-password")
    wrong_password = write_config(tmp_path / "wrong.yaml", raw)
    raw["metadata"]["mysql"]["port"] = _free_port()  # nothing listens there
    nobody = write_config(tmp_path / "nobody.yaml", raw)
    monkeypatch.chdir(tmp_path)
    why = f"is the server running there, and is the password in ${PASSWORD_ENV} right?"
    for bad in (wrong_password, nobody):
        result = _cli(*command[:1], *command[1:], "--config", str(bad))
        assert result.exit_code == 1
        port = raw["metadata"]["mysql"]["port"] if bad == nobody else mariadb
        assert result.output.startswith(
            f"Error: {bad}: metadata.mysql: cannot connect to database 'mlmd' as 'skewless' on "
            f"127.0.0.1:{port}: "), result.output
        assert result.output.endswith(f": {why}\n") and len(result.output.splitlines()) == 1
    assert not (tmp_path / "manifests").exists()
