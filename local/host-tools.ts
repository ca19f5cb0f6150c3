/**
 * The host programs the runner needs to provide machines, found before anything is created so a
 * missing package is one clear message instead of a half-built cluster.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { RefusedError } from "../core";

export const SETUP_SCRIPT = "scripts/setup-debian.sh";

/** Each program, with the Debian package that brings it. */
const HOST_TOOLS: Record<string, string> = {
  "systemd-nspawn": "systemd-container",
  mmdebstrap: "mmdebstrap",
  ssh: "openssh-client",
  "ssh-keygen": "openssh-client",
  ip: "iproute2",
  losetup: "mount",
  nsenter: "util-linux",
  flock: "util-linux",
};

export class MissingHostToolsError extends RefusedError {
  constructor(readonly missing: { program: string; pkg: string }[]) {
    const pkgs = [...new Set(missing.map((m) => m.pkg))];
    super(
      `missing programs on this machine: ${missing.map((m) => m.program).join(", ")} (Debian packages ${pkgs.join(", ")}). ` +
        `Install them with: sudo bash ${SETUP_SCRIPT}`,
    );
  }
}

function onPath(program: string, searchPath: string): boolean {
  return searchPath.split(":").some((dir) => {
    if (!dir) return false;
    try {
      fs.accessSync(path.join(dir, program), fs.constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/** Throws MissingHostToolsError naming what to install; returns quietly when everything is there. */
export function checkHostTools(searchPath = process.env.PATH ?? ""): void {
  const missing = Object.entries(HOST_TOOLS)
    .filter(([program]) => !onPath(program, searchPath))
    .map(([program, pkg]) => ({ program, pkg }));
  if (missing.length > 0) throw new MissingHostToolsError(missing);
}
