"""How OpenMP threads wait between parallel regions, chosen before torch starts its thread pool.

torch's CPU build runs on GNU OpenMP, whose threads spin at every barrier for a long while before
sleeping. Alone on a machine that is fastest; beside any other busy process the spinning threads
take the cores the work needs, and the demo ran up to 40x slower (benchmarks/README.md, "Shared
machine"). Sleeping at once (OMP_WAIT_POLICY=PASSIVE) avoids that but costs about 20% alone.
So: passive where other processes are running when the command starts, OpenMP's own spinning
where the machine is idle. Every entry point calls `set_wait_policy` before it imports torch (libgomp
reads the variable when it loads); a waiting variable already in the environment always wins. No torch
import here: it would start OpenMP too early.
"""
import os
import time

WAIT_VARIABLES = ('OMP_WAIT_POLICY', 'GOMP_SPINCOUNT', 'KMP_BLOCKTIME')
SAMPLES, SAMPLE_SECONDS = 5, 0.01


def running_processes():
    """Runnable tasks on the machine now, this one included (/proc/stat's procs_running); None
    where that is not available."""
    try:
        with open('/proc/stat') as handle:
            for line in handle:
                if line.startswith('procs_running'):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def machine_is_shared():
    """Whether other processes compete for the CPU: the median of a few samples of the runnable
    tasks, over 40 ms, is above one (this process)."""
    samples = []
    for index in range(SAMPLES):
        count = running_processes()
        if count is None:
            return False
        samples.append(count)
        if index + 1 < SAMPLES:
            time.sleep(SAMPLE_SECONDS)
    return sorted(samples)[len(samples) // 2] > 1


def set_wait_policy(environ=None, shared=None):
    """Set OMP_WAIT_POLICY=PASSIVE on a shared machine unless the environment says how threads wait;
    returns what is in force (environment.yaml records the variables). `shared`: the probe's answer
    (tests)."""
    environ = os.environ if environ is None else environ
    given = [f'{name}={environ[name]}' for name in WAIT_VARIABLES if name in environ]
    if given:
        return ', '.join(given) + ' (from the environment)'
    if machine_is_shared() if shared is None else shared:
        environ['OMP_WAIT_POLICY'] = 'PASSIVE'
        return 'OMP_WAIT_POLICY=PASSIVE (other processes were running at the start)'
    return "OpenMP's default (the machine was idle at the start)"
