"""Command tasks: a process on the worker whose result is its stdout."""

from __future__ import annotations

from .helpers import Runner, call, command, flowrun, states


def test_result_is_stdout_without_the_trailing_newline(run: Runner) -> None:
    status, _ = run(
        flowrun(
            command("lines", "printf", "a\\nb\\n"),
            command("blank", "printf", "x\\n\\n"),
            command("bare", "printf", "no newline"),
            command("silent", "true"),
        )
    )
    results = {name: rec["result"] for name, rec in status["tasks"].items()}
    assert results == {"lines": "a\nb", "blank": "x\n", "bare": "no newline", "silent": ""}


def test_nonzero_exit_fails_with_exit_code_and_stderr_tail(run: Runner) -> None:
    script = "head -c 5000 /dev/zero | tr '\\0' 'e' >&2; echo; echo THE-END >&2; exit 3"
    status, _ = run(flowrun(command("bad", "sh", "-c", script)))
    rec = status["tasks"]["bad"]
    assert rec["state"] == "Failed"
    assert status["phase"] == "Failed"
    assert "exit code 3" in rec["message"]
    assert rec["message"].rstrip().endswith("THE-END")  # the tail of stderr ...
    assert len(rec["message"]) < 2100  # ... not all of it


def test_killed_command_says_which_signal(run: Runner) -> None:
    status, _ = run(flowrun(command("killed", "sh", "-c", "kill -9 $$")))
    assert "killed by signal 9" in status["tasks"]["killed"]["message"]


def test_missing_program_fails_the_task(run: Runner) -> None:
    status, _ = run(flowrun(command("nope", "/no/such/program")))
    rec = status["tasks"]["nope"]
    assert rec["state"] == "Failed"
    assert "FileNotFoundError" in rec["message"]


def test_env_parameters_and_flowrun_name(run: Runner) -> None:
    status, _ = run(
        flowrun(
            call("count", "identity", 42),
            command(
                "show",
                "sh",
                "-c",
                'echo "$GREETING $COUNT $LIST $(flowrun.name)"',
                env={
                    "GREETING": "$(params.greeting)",
                    "COUNT": "$(tasks.count.result)",
                    "LIST": "$(params.list)",
                },
            ),
            name="env-test",
            parameters={"greeting": "hi", "list": [1, "a"]},
        )
    )
    assert status["tasks"]["show"]["result"] == 'hi 42 [1,"a"] env-test'


def test_result_of_a_call_passed_into_a_command(run: Runner) -> None:
    status, _ = run(
        flowrun(
            call("numbers", "make_list", 3),
            call("word", "identity", "hello"),
            command("exact", "echo", "$(tasks.numbers.result)"),  # a list, as JSON
            command("inline", "sh", "-c", "echo got $(tasks.word.result) $(tasks.numbers.result)"),
        )
    )
    assert status["tasks"]["exact"]["result"] == "[0,1,2]"
    assert status["tasks"]["inline"]["result"] == "got hello [0,1,2]"


def test_shell_command_substitution_is_left_to_the_shell(run: Runner) -> None:
    status, _ = run(flowrun(command("sub", "sh", "-c", "echo $(echo inner) $(printf x)")))
    assert status["tasks"]["sub"]["result"] == "inner x"


def test_command_result_feeds_a_call(run: Runner) -> None:
    status, _ = run(
        flowrun(
            command("text", "printf", "abc"),
            call("size", "length", "$(tasks.text.result)"),
        )
    )
    assert status["tasks"]["size"]["result"] == 3


def test_mapped_command(run: Runner) -> None:
    status, _ = run(
        flowrun(
            command("rev", "sh", "-c", "printf '%s' '$(item)' | rev", map=["abc", "xy"]),
            call("collect", "identity", "$(tasks.rev.result)"),
        )
    )
    assert states(status) == {"rev": "Succeeded", "collect": "Succeeded"}
    assert status["tasks"]["collect"]["result"] == ["cba", "yx"]


def test_command_timeout_says_timeout(run: Runner) -> None:
    status, _ = run(flowrun(command("slow", "sleep", "30", timeoutSeconds=0.5)))
    rec = status["tasks"]["slow"]
    assert rec["state"] == "Failed"
    assert "timeout" in rec["message"]
    assert rec["attempts"] == 1
