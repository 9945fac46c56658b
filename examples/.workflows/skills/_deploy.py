"""Starts the example application from an artifact directory (shared by the deployers)."""
import os, signal, subprocess, sys, time, urllib.request
import _skill


def stop(environment):
    """Stops the environment's current deployment, if one runs (a deploy replaces it)."""
    current = _skill.read_json(os.path.join(_skill.state_dir(environment), "current.json"), {})
    if current.get("pid"):
        try:
            os.kill(int(current["pid"]), signal.SIGTERM)
        except OSError:
            pass
    return current


def start(artifact, environment):
    if not os.path.isdir(artifact):
        _skill.fail("DeploymentError", f"artifact `{artifact}` does not exist")
    env_dir = _skill.state_dir(environment)
    stop(environment)
    port_file = os.path.join(env_dir, f"port.{os.getpid()}")
    here = os.path.dirname(os.path.abspath(__file__))
    log = open(os.path.join(env_dir, "server.log"), "ab")
    proc = subprocess.Popen(
        [sys.executable, os.path.join(here, "serve.py"), artifact, port_file],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
    )
    deadline = time.monotonic() + 10
    while not os.path.exists(port_file):
        if proc.poll() is not None or time.monotonic() > deadline:
            _skill.fail("DeploymentError", "the application server did not start")
        time.sleep(0.01)
    with open(port_file) as f:
        port = int(f.read())
    os.remove(port_file)
    endpoint = f"http://127.0.0.1:{port}"
    urllib.request.urlopen(endpoint + "/", timeout=5).read()
    _skill.write_json(os.path.join(env_dir, "current.json"),
                      {"artifact": artifact, "endpoint": endpoint, "pid": proc.pid})
    return endpoint, proc.pid
