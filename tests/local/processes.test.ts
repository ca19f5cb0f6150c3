/**
 * local/processes.ts on real processes of this machine: a tree's CPU time still counts what its
 * children spent after they ended (the benchmark's node CPU per connection depends on it: a
 * PostgreSQL backend lives for one connection).
 */
import { spawn } from "node:child_process";
import { CLOCK_TICKS_PER_SECOND, machineCpuTicks, machineProcesses, processStat } from "../../local/processes";

/** A shell whose child burns `cpuSeconds` of CPU and ends; the shell then waits on a sleep. */
function burnThenWait(cpuSeconds: number) {
  const script = `python3 -c 'import time
while time.process_time() < ${cpuSeconds}: pass'
echo burnt
sleep 60
exit 0`; // sleep is not the last command, or bash would exec it in its own place
  const child = spawn("bash", ["-c", script], { detached: true, stdio: ["ignore", "pipe", "inherit"] });
  const burnt = new Promise<void>((resolve, reject) => {
    child.stdout!.on("data", (d: Buffer) => d.toString().includes("burnt") && resolve());
    child.on("exit", (code) => reject(new Error(`the shell ended early (exit ${code})`)));
  });
  return { pid: child.pid!, burnt };
}

test("a tree's CPU time keeps what an ended child spent; the processes' own times alone lose it", async () => {
  const shell = burnThenWait(0.4);
  try {
    await shell.burnt;
    // The python child has ended and been reaped: once the sleep runs, the tree is the shell and it.
    const comms = () => machineProcesses(shell.pid).map((pid) => processStat(pid)?.comm);
    for (let i = 0; i < 50 && !comms().includes("sleep"); i++) await new Promise((r) => setTimeout(r, 100));
    const pids = machineProcesses(shell.pid);
    expect(pids.map((pid) => processStat(pid)?.comm).sort()).toEqual(["bash", "sleep"]);
    const own = pids.reduce((sum, pid) => sum + (processStat(pid)?.cpuTicks ?? 0), 0);
    expect(own).toBeLessThan(0.1 * CLOCK_TICKS_PER_SECOND);
    expect(machineCpuTicks(shell.pid)).toBeGreaterThanOrEqual(0.4 * CLOCK_TICKS_PER_SECOND);
  } finally {
    // The shell leads its own process group: that ends the sleep too.
    process.kill(-shell.pid, "SIGKILL");
  }
});

test("a process that is gone counts nothing", () => {
  expect(machineCpuTicks(undefined)).toBe(0);
  const child = spawn("true");
  return new Promise<void>((resolve) =>
    child.on("exit", () => {
      expect(machineCpuTicks(child.pid)).toBe(0);
      expect(machineProcesses(child.pid)).toEqual([]);
      resolve();
    }),
  );
});
