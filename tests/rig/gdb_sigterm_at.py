"""Run inside gdb (`gdb -nx -batch -x gdb_sigterm_at.py BINARY`): starts BINARY, and from
the first instruction of its main counts the system calls it makes; on entering the
SIGTERM_AT-th one (1-based), a real SIGTERM is sent to it from outside (kill(2)), and the
process is let run to its end, gdb passing every signal through unchanged (a signal a
process has not blocked and has no handler for still ends it).  Should the process reach
rt_run (the runtime loop, the end of start-up) before that many system calls, the signal
is sent there instead.

Writes a JSON document to RESULT_PATH: {"at": K, "pid": the process, "syscall": the
system call's number or null, "startup_syscalls": the count seen before rt_run, when it was reached, else null,
"exit_code": the exit status or null, "exit_signal": the signal that ended it or null};
without the last two when the process did not end.
The process's stdout and stderr go to STDOUT_PATH and STDERR_PATH."""
import json
import os
import signal

import gdb

AT = int(os.environ["SIGTERM_AT"])
stops = []


def _on_stop(event):
    stops.append(event)


def _value(name):
    v = gdb.parse_and_eval(name)
    return None if v.type.code == gdb.TYPE_CODE_VOID else int(v)


def _syscall_number():
    arch = gdb.selected_frame().architecture().name()
    return _value("$orig_rax" if "x86-64" in arch else "$x8")


for name in ("SIGTERM_AT", "RESULT_PATH", "STDOUT_PATH", "STDERR_PATH"):
    gdb.execute(f"unset environment {name}")  # the process sees only its own settings
for command in ("set pagination off", "set confirm off", "set startup-with-shell on",
                "handle all nostop noprint pass", "break main"):
    gdb.execute(command)
gdb.execute(f"run > {os.environ['STDOUT_PATH']} 2> {os.environ['STDERR_PATH']}")
gdb.execute("delete")
end = gdb.Breakpoint("rt_run", internal=True)
gdb.execute("catch syscall")
gdb.events.stop.connect(_on_stop)
result = {"at": AT, "syscall": None, "startup_syscalls": None}
entries = 0
entering = True  # catch syscall stops alternate: entry, return (one thread)
while True:
    gdb.execute("continue")
    last = stops[-1]
    if isinstance(last, gdb.BreakpointEvent) and end in last.breakpoints:
        result["startup_syscalls"] = entries
        break
    if entering:
        entries += 1
        if entries == AT:
            result["syscall"] = _syscall_number()
            break
    entering = not entering
gdb.events.stop.disconnect(_on_stop)
result["pid"] = gdb.selected_inferior().pid
with open(os.environ["RESULT_PATH"], "w") as f:
    json.dump(result, f)  # read when the process does not end (the caller then kills it)
os.kill(result["pid"], signal.SIGTERM)
end.delete()
gdb.execute("delete")
gdb.execute("continue")
result["exit_code"] = _value("$_exitcode")
result["exit_signal"] = _value("$_exitsignal")
with open(os.environ["RESULT_PATH"], "w") as f:
    json.dump(result, f)
