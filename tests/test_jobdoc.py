"""lib/jobdoc.py: job documents of both schemas, and statusDetails within AWS's rules."""

import pytest

from lib.jobdoc import (
    JobDocumentError,
    clean_value,
    parse,
    path_in_dirs,
    split_command,
    status_details,
)


def action(**fields):
    base = {"name": "s", "type": "runHandler", "input": {"handler": "h.sh"}}
    base.update(fields)
    return {"action": base}


def test_the_device_client_readme_sample():
    plan = parse({
        "version": "1.0",
        "steps": [action(name="Install-Packages", runAsUser="root",
                         input={"handler": "install-packages.sh", "args": ["wget"],
                                "path": "default"}),
                  action(name="Download-File",
                         input={"handler": "download-file.sh",
                                "args": ["https://example.com/f.tar.gz", "/tmp/f.tar.gz"]})],
        "finalStep": action(name="Remove-Packages", ignoreStepFailure="true",
                            input={"handler": "remove-packages.sh", "args": ["wget"]})})
    assert plan.schema == "1.0" and not plan.include_stdout
    install, download = plan.steps
    assert install.handler == "install-packages.sh" and install.path == ""
    assert install.arguments() == ["root", "wget"]
    assert download.arguments() == ["", "https://example.com/f.tar.gz", "/tmp/f.tar.gz"]
    assert plan.final.ignore_failure is True
    assert [a.name for a in plan.actions()] == ["Install-Packages", "Download-File",
                                                "Remove-Packages"]


def test_the_old_schema():
    plan = parse({"operation": "install-packages.sh", "args": ["lftp", "dos2unix"],
                  "path": "default", "allowStdErr": 2, "includeStdOut": "true"})
    (step,) = plan.steps
    assert plan.schema == "old" and plan.include_stdout
    assert step.arguments() == ["lftp", "dos2unix"]  # no runAsUser argument
    assert step.allow_stderr == 2 and plan.final is None


@pytest.mark.parametrize("value, expected", [("true", True), ("false", False), (True, True),
                                             (False, False), ("TRUE", True), (None, False)])
def test_ignore_step_failure_strings_and_booleans(value, expected):
    assert parse({"version": "1.0", "steps": [action(ignoreStepFailure=value)]}) \
        .steps[0].ignore_failure is expected


@pytest.mark.parametrize("document, reason", [
    ([], "not a JSON object"),
    ({"version": "1.1", "steps": []}, "unsupported job document version"),
    ({"version": "1.0"}, "\"steps\" must be a list"),
    ({"version": "1.0", "steps": []}, "no steps"),
    ({"version": "1.0", "steps": [{"name": "x"}]}, "with an \"action\""),
    ({"version": "1.0", "steps": [action(name="")]}, "needs a \"name\""),
    ({"version": "1.0", "steps": [action(type="runScript")]}, "unknown action type"),
    ({"version": "1.0", "steps": [action(input={"handler": "a/b"})]}, "not a plain file name"),
    ({"version": "1.0", "steps": [action(input={"handler": ".x"})]}, "not a plain file name"),
    ({"version": "1.0", "steps": [action(input={"handler": ".."})]}, "not a plain file name"),
    ({"version": "1.0", "steps": [action(input={"handler": ""})]}, "non-empty string"),
    ({"version": "1.0", "steps": [action(input={"handler": "h", "args": "x"})]},
     "list of strings"),
    ({"version": "1.0", "steps": [action(input={"handler": "h", "args": [1]})]},
     "list of strings"),
    ({"version": "1.0", "steps": [action(runAsUser=0)]}, "runAsUser"),
    ({"version": "1.0", "steps": [action(ignoreStepFailure="yes")]}, "true or false"),
    ({"version": "1.0", "steps": [action(type="runCommand", input={"command": ""})]},
     "names no program"),
    ({"version": "1.0", "steps": [action()], "includeStdOut": 1}, "true or false"),
    ({"version": "1.0", "steps": [action()], "timeoutConfig": {}}, "timeoutConfig"),
    ({"operation": "../bin/sh"}, "not a plain file name"),
    ({"operation": "x", "allowStdErr": -1}, "allowStdErr"),
    ({"operation": "x", "args": ["${aws:iot:parameter:services}"]}, "unsubstituted"),
    ({"ToDo": "Reboot"}, "not a job document"),
    ({"operation": "x", "args": ["y" * 32768]}, "over AWS's 32768"),
])
def test_documents_that_cannot_run(document, reason):
    with pytest.raises(JobDocumentError, match=None) as e:
        parse(document)
    assert reason in str(e.value)


def test_a_document_of_just_32_kb_is_taken():
    padding = 32 * 1024 - len('{"operation":"x","args":[""]}')
    assert parse({"operation": "x", "args": ["y" * padding]}).steps[0].args[0]


def test_run_command():
    (step,) = parse({"version": "1.0", "steps": [action(
        type="runCommand", runAsUser="svc",
        input={"command": "/bin/echo,a\\,b,,c\\d"})]}).steps
    assert step.kind == "command"
    assert step.argv == ["/bin/echo", "a,b", "", "c\\d"]
    assert step.arguments() == ["a,b", "", "c\\d"]  # no runAsUser argument for a command


@pytest.mark.parametrize("text, argv", [
    ("ls", ["ls"]), ("a,b", ["a", "b"]), ("a\\,b", ["a,b"]), ("a,", ["a", ""]),
    ("a\\\\,b", ["a\\,b"]), ("", [""]),
])
def test_split_command(text, argv):
    assert split_command(text) == argv


def test_timeout_config():
    plan = parse({"version": "1.0", "steps": [action()],
                  "timeoutConfig": {"inProgressTimeoutInMinutes": 2}})
    assert plan.timeout == 120.0


@pytest.mark.parametrize("path, expected", [
    ("", "/opt/jobs"), ("/opt/jobs", "/opt/jobs"), ("/opt/jobs/", "/opt/jobs"),
    ("/opt/jobs/sub", "/opt/jobs/sub"), ("/opt/more", "/opt/more"),
    ("/opt/jobs/../etc", None), ("/opt/jobsx", None), ("/bin", None), ("jobs", None),
    ("/", None), ("/opt/jobs/./sub/..", "/opt/jobs"),
])
def test_path_in_dirs(path, expected):
    assert path_in_dirs(path, ["/opt/jobs", "/opt/more/"]) == expected


def test_clean_value_keeps_the_end_and_no_control_characters():
    assert clean_value(b"one\r\ntwo\n\tthree\x00\x1b[0m\xe2\x80\x8b!\n") == \
        "one | two |  three  [0m !"
    long = clean_value("x" * 2000 + "END")
    assert len(long) == 1024 and long.startswith("...") and long.endswith("END")
    assert clean_value(b"\xff\xfe") == "\ufffd\ufffd"
    assert clean_value("\n\n") == ""


def test_status_details_within_aws_rules():
    details, dropped = status_details({"ok": "v", "n": 5, "b": True, "o": {"a": [1]},
                                       "bad key": "x", "": "x", "empty": "", "k" * 129: "x",
                                       "line": "a\nb"})
    assert details == {"ok": "v", "n": "5", "b": "true", "o": '{"a":[1]}', "line": "a | b"}
    assert sorted(dropped) == sorted(["bad key", "", "k" * 129])
    many, dropped = status_details({"k%d" % i: "v" for i in range(12)})
    assert len(many) == 10 and dropped == ["k10", "k11"]
