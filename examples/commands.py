"""commands.yaml, written in Python: command tasks, a Python step between them, when, map.

    python examples/commands.py [publish=true]

``shell([...])`` is a command task; its result is its stdout. ``$(date +%A)`` is shell
syntax, left alone. ``publish`` is false by default, so publish and notify are Skipped.
"""

import sys

from daskflow import Cluster, flow, shell, task
from daskflow.examples import text

stats = task(name="stats")(text.word_stats)


@flow(name="commands", cluster=Cluster(workers=2, threads_per_worker=1), deadline=300)
def commands(
    greeting: str = "hello",
    publish: bool = False,
    words: list[str] = ["level", "stressed", "drawer"],  # noqa: B006 (a parameter's default)
) -> None:
    names = shell(
        ["sh", "-c", "printf '%s\\n' alpha beta gamma delta | sort -r | head -n 3"],
        name="list-names",
    )
    shell(
        ["sh", "-c", 'echo "$GREETING from $(flowrun.name) on $(date +%A)" | tr a-z A-Z'],
        name="greet",
        env={"GREETING": greeting},
    )
    counted = stats(names)
    shell(
        ["sh", "-c", "echo \"$STATS\" | tr -d '{}\"' | tr ',' '\\n' | sort"],
        name="summary",
        env={"STATS": counted},
    )
    shell.map(words, ["sh", "-c", "echo '$(item)' | rev"], name="reverse")
    published = shell(["sh", "-c", f"echo 'publishing {counted}'"], name="publish", when=publish)
    shell(["echo", "published"], name="notify").after(published)


if __name__ == "__main__":
    flags = dict(arg.split("=", 1) for arg in sys.argv[1:])
    result = commands.run(**{k: v.lower() == "true" for k, v in flags.items()})
    print(result.results)
    sys.exit(0 if result.phase == "Succeeded" else 1)
