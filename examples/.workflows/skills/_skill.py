"""Tiny helper shared by the example skills (not a skill itself).

The step protocol (README, "Skills and the step protocol"): parameters arrive as one JSON object on stdin (and as
AGENT_PARAM_* variables); outputs go to the file named by AGENT_OUTPUT as `key=value` lines;
a context update goes to AGENT_CONTEXT as one JSON object. The working directory is the
workspace. Long waits of the example workflows are shortened by TIME_SCALE (documented in
the README): `duration: 300` waits 300 * 0.001 s.
"""
import json
import os
import sys
import time

TIME_SCALE = float(os.environ.get("AGENT_EXAMPLE_TIME_SCALE", "0.001"))


def params():
    data = sys.stdin.read()
    return json.loads(data) if data.strip() else {}


def output(**values):
    path = os.environ.get("AGENT_OUTPUT")
    if not path:
        return
    with open(path, "a", encoding="utf-8") as f:
        for key, value in values.items():
            text = value if isinstance(value, str) else json.dumps(value)
            if "\n" in text:
                f.write(f"{key}<<__AGENT_EOF__\n{text}\n__AGENT_EOF__\n")
            else:
                f.write(f"{key}={text}\n")


def context(**values):
    path = os.environ.get("AGENT_CONTEXT")
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(values, f)


def fail(error_class, message, code=1):
    """Fails the step with an error class the workflow's error_handlers can match."""
    print(message, file=sys.stderr)
    output(error_class=error_class, error=message)
    sys.exit(code)


def wait(seconds):
    """Waits `seconds` of the workflow's time, shortened by TIME_SCALE."""
    time.sleep(max(0.0, float(seconds)) * TIME_SCALE)


def state_dir(*parts):
    """The example deployment's state, kept in the workspace under .deploy/."""
    path = os.path.join(os.getcwd(), ".deploy", *parts)
    os.makedirs(path, exist_ok=True)
    return path


def read_json(path, default=None):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def write_json(path, value):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f)
    os.replace(tmp, path)
