"""The sandboxed Python executor's child process: limits, a refusal policy, then the code.

Run as `python -I _child.py SCRATCH CPU_S MEMORY_BYTES FILE_BYTES` with the code on
stdin and the scratch directory as its working directory. It lowers its own rlimits
(soft and hard, so the code cannot raise them again), installs an audit hook that
refuses sockets, subprocesses, ctypes symbol lookups and any write outside SCRATCH,
then executes the code. Exit codes: 0 ok, 1 the code raised, 3 MemoryError, 4 the
policy refused an action (even if the code caught the PermissionError).
"""
import os
import resource
import sys
import traceback

EXIT_ERROR, EXIT_MEMORY, EXIT_REFUSED = 1, 3, 4
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
# Audit events that change the file system, with the indices of their path arguments.
_FS_EVENTS = {"os.remove": (0,), "os.rmdir": (0,), "os.mkdir": (0,), "os.rename": (0, 1),
              "os.link": (0, 1), "os.symlink": (1,), "os.truncate": (0,),
              "os.chmod": (0,), "os.chown": (0,), "os.utime": (0,),
              "os.mkfifo": (0,), "os.mknod": (0,)}
_PROCESS_EVENTS = ("os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
                   "os.forkpty", "subprocess.Popen", "os.kill", "os.killpg", "pty.spawn")
violations = []


def _inside(path, scratch):
  if isinstance(path, int):  # an already open descriptor
    return True
  real = os.path.realpath(os.fsdecode(os.fspath(path)))
  return real == scratch or real.startswith(scratch + os.sep)


def _policy(scratch):
  def refuse(what):
    violations.append(what)
    raise PermissionError(f"sandbox: {what} is not allowed")

  def hook(event, args):
    if event.startswith("socket."):
      refuse("network access")
    elif event in _PROCESS_EVENTS:
      refuse(f"starting processes ({event})")
    elif event in ("ctypes.dlsym", "ctypes.dlsym/handle") or (
        event == "ctypes.dlopen" and args and args[0] is not None):
      refuse(f"loading native symbols ({event})")
    elif event == "open":
      path, _, flags = args
      if flags & _WRITE_FLAGS and path is not None and not _inside(path, scratch):
        refuse(f"writing {os.fsdecode(os.fspath(path))!r} outside the scratch directory")
    elif event in _FS_EVENTS:
      for i in _FS_EVENTS[event]:
        if i < len(args) and args[i] is not None and not _inside(args[i], scratch):
          refuse(f"{event} on {args[i]!r} outside the scratch directory")
  return hook


def main():
  scratch = os.path.realpath(sys.argv[1])
  cpu_s, memory, file_bytes = (int(x) for x in sys.argv[2:5])
  for limit, value in ((resource.RLIMIT_CPU, cpu_s), (resource.RLIMIT_AS, memory),
                       (resource.RLIMIT_FSIZE, file_bytes), (resource.RLIMIT_CORE, 0)):
    resource.setrlimit(limit, (value, value))
  code = sys.stdin.read()
  sys.stdin.close()
  sys.addaudithook(_policy(scratch))
  status = 0
  try:
    exec(compile(code, "<tool>", "exec"), {"__name__": "__main__"})
  except MemoryError:
    status = EXIT_MEMORY
    print("MemoryError: the code exceeded the sandbox's memory limit", flush=True)
  except BaseException as e:  # noqa: BLE001 - the model sees its own traceback
    status = EXIT_ERROR
    # From the code's own frames on (this file's frame is not the model's business).
    traceback.print_exception(type(e), e, e.__traceback__.tb_next, file=sys.stdout)
  sys.stdout.flush()
  if violations:
    print(f"sandbox refused: {violations[0]}", flush=True)
    status = EXIT_REFUSED
  os._exit(status)  # skips the code's atexit handlers


if __name__ == "__main__":
  main()
