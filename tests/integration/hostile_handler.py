#!/usr/bin/python3
"""hostile_handler.py: a handler a hostile message has taken over (issue 16).

It tries each attack of the issue's table on the warrend that runs it and
writes what worked to $OUT/result-<pid>.json; then it exits 0, so that the
message is acked. The password is given as two halves ($PW_A, $PW_B): the
whole of it is nowhere in warrend's configuration or environment, only in
password_file, so finding it in a process's memory means that process
read the file.
"""

import ctypes
import json
import os
import re
import signal
import socket
import sys
import time

OUT = os.environ["OUT"]
PASSWORD = (os.environ["PW_A"] + os.environ["PW_B"]).encode()
QUEUE = os.environ["WARREN_QUEUE"]
result = {"pid": os.getpid()}


def attempt(name, fn):
    try:
        result[name] = fn()
    except Exception as e:  # what stopped it
        result[name] = False
        result[name + "_error"] = f"{type(e).__name__}: {e}"


def ppid_of(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def read_password_file():
    with open(os.environ["PWFILE"], "rb") as f:
        return PASSWORD in f.read()


def memory_has_password(pid):
    found = False
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb") as mem:
        for line in maps:
            m = re.match(r"([0-9a-f]+)-([0-9a-f]+) (r)", line)
            if not m or "[vvar]" in line or "[vsyscall]" in line:
                continue
            start, end = int(m.group(1), 16), int(m.group(2), 16)
            if end - start > 256 << 20:
                continue
            try:
                mem.seek(start)
                if PASSWORD in mem.read(end - start):
                    found = True
            except OSError:
                continue
    return found


def ptrace_attach(pid):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p,
                            ctypes.c_void_p]
    if libc.ptrace(16, pid, None, None) != 0:  # PTRACE_ATTACH
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    os.waitpid(pid, 0)
    libc.ptrace(17, pid, None, None)  # PTRACE_DETACH
    return True


def can_signal(pid):
    os.kill(pid, 0)  # the permission check only
    return True


def pause_own_queue():
    def say(line):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        s.connect(os.environ["CTL"])
        s.sendall(line.encode())
        answer = s.recv(4096).decode()
        s.close()
        return answer
    answer = say(f"pause {QUEUE}\n")
    result["pause_answer"] = answer
    if '"ok":true' in answer.replace(" ", ""):
        say(f"resume {QUEUE}\n")
        return True
    return False


def environ_has_password(pid):
    with open(f"/proc/{pid}/environ", "rb") as f:
        return PASSWORD in f.read()


def fork_many(n):
    kids = []
    try:
        for _ in range(n):
            pid = os.fork()
            if pid == 0:
                time.sleep(30)
                os._exit(0)
            kids.append(pid)
    except OSError as e:
        result["fork_error"] = str(e)
    finally:
        for pid in kids:
            os.kill(pid, signal.SIGKILL)
        for pid in kids:
            os.waitpid(pid, 0)
    result["forked"] = len(kids)
    return len(kids) >= n


def allocate(mib):
    import mmap
    m = mmap.mmap(-1, mib << 20)
    for off in range(0, mib << 20, 4096):
        m[off] = 1
    m.close()
    return True


def main():
    sys.stdin.buffer.read()
    worker = os.getppid()
    master = ppid_of(worker)
    result["worker"], result["master"] = worker, master
    others = [int(p) for p in os.listdir("/proc") if p.isdigit()
              and int(p) != worker and _ppid_or(int(p)) == master]
    attempt("password_file", read_password_file)
    attempt("worker_memory", lambda: memory_has_password(worker))
    attempt("master_memory", lambda: memory_has_password(master))
    attempt("ptrace_worker", lambda: ptrace_attach(worker))
    attempt("signal_master", lambda: can_signal(master))
    attempt("signal_other_worker",
            lambda: bool(others) and can_signal(others[0]))
    attempt("pause_queue", pause_own_queue)
    attempt("worker_environ", lambda: environ_has_password(worker))
    attempt("fork_3000", lambda: fork_many(int(os.environ.get("FORKS", "3000"))))
    attempt("allocate_2g", lambda: allocate(int(os.environ.get("ALLOC_MIB", "2048"))))
    if "ALLOC_SMALL_MIB" in os.environ:
        attempt("allocate_small", lambda: allocate(int(os.environ["ALLOC_SMALL_MIB"])))
    with open("/proc/self/status") as f:
        result["status"] = {k: v.strip() for k, v in
                            (line.split(":", 1) for line in f)
                            if k in ("Uid", "Gid", "Groups", "CapInh", "CapPrm",
                                     "CapEff", "CapBnd", "CapAmb", "NoNewPrivs")}
    path = os.path.join(OUT, f"result-{os.getpid()}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(result, f)
    os.rename(path + ".tmp", path)


def _ppid_or(pid):
    try:
        return ppid_of(pid)
    except OSError:
        return None


main()
