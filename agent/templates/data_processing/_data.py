"""Helpers shared by the data skills (not a skill itself): the step protocol and the
working files. Parameters arrive as one JSON object on stdin; outputs are `key=value` lines
appended to the file named by AGENT_OUTPUT."""
import json
import os
import sys


def params():
    text = sys.stdin.read()
    return json.loads(text) if text.strip() else {}


def output(**values):
    path = os.environ.get("AGENT_OUTPUT")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            for key, value in values.items():
                f.write(f"{key}={value if isinstance(value, str) else json.dumps(value)}\n")


def fail(error_class, message):
    print(message, file=sys.stderr)
    output(error_class=error_class)
    sys.exit(1)


def work_path(name):
    os.makedirs(".work", exist_ok=True)
    return os.path.join(".work", name)


def load(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        fail("DataError", f"cannot read `{path}`: {e}")


def save(name, value):
    path = work_path(name)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(value, f)
    os.replace(path + ".tmp", path)
    return path
