// How to start coda-lsp: the command line, resolved from settings and the environment.
//
// Order: `coda.server.command`; `coda.server.pythonPath`; a `coda-lsp` executable in a
// workspace folder's virtualenv or on PATH; the Python extension's configured interpreter.
// `--model`, `--device` and `coda.server.args` are appended. `problem` says, before anything
// is started, when the command found cannot run, naming the path it tried and the setting that
// fixes it. VS Code and code-server take PATH from the login shell that started them, so a
// coda-lsp on an interactive shell's PATH may not be found: the full path in a setting is
// what always works. This module starts nothing.
import * as fs from "fs";
import * as path from "path";
import * as vscode from "vscode";

export interface ServerCommand {
  command: string;
  args: string[];
  /** Human-readable account of where the command came from, for the log. */
  source: string;
}

const RUN_FROM_PYTHON = "import sys; from coda_lsp.cli import main; sys.exit(main())";
const VENV_DIRS = [".venv", "venv", ".env", "env"];

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

function binDir(): string {
  return process.platform === "win32" ? "Scripts" : "bin";
}

function exeName(name: string): string {
  return process.platform === "win32" ? `${name}.exe` : name;
}

function findOnPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? "").split(path.delimiter)) {
    if (dir && isExecutable(path.join(dir, exeName(name)))) {
      return path.join(dir, exeName(name));
    }
  }
  return undefined;
}

function findInWorkspaceVenvs(name: string): string | undefined {
  for (const folder of vscode.workspace.workspaceFolders ?? []) {
    if (folder.uri.scheme !== "file") {
      continue;
    }
    for (const venv of VENV_DIRS) {
      const candidate = path.join(folder.uri.fsPath, venv, binDir(), exeName(name));
      if (isExecutable(candidate)) {
        return candidate;
      }
    }
  }
  return undefined;
}

function baseCommand(): ServerCommand | undefined {
  const config = vscode.workspace.getConfiguration("coda.server");
  const explicit = config.get<string[]>("command") ?? [];
  if (explicit.length > 0) {
    return { command: explicit[0], args: explicit.slice(1), source: "coda.server.command" };
  }
  const pythonPath = config.get<string>("pythonPath") ?? "";
  if (pythonPath) {
    return { command: pythonPath, args: ["-c", RUN_FROM_PYTHON], source: "coda.server.pythonPath" };
  }
  const venvExe = findInWorkspaceVenvs("coda-lsp");
  if (venvExe) {
    return { command: venvExe, args: [], source: "workspace virtualenv" };
  }
  const pathExe = findOnPath("coda-lsp");
  if (pathExe) {
    return { command: pathExe, args: [], source: "PATH" };
  }
  const interpreter = vscode.workspace.getConfiguration("python").get<string>("defaultInterpreterPath");
  if (interpreter && interpreter !== "python") {
    return { command: interpreter, args: ["-c", RUN_FROM_PYTHON], source: "python.defaultInterpreterPath" };
  }
  return undefined;
}

/** The setting that chose the command: the one to change when it does not run. */
export function settingOf(server: ServerCommand): string {
  return /^(coda|python)\./.test(server.source) ? server.source : "coda.server.command";
}

/** Why `server.command` cannot run (one line naming the path tried and the setting to change),
 * or undefined when it can. */
export function problem(server: ServerCommand): string | undefined {
  const command = server.command;
  const setting = settingOf(server);
  const fix = setting === "coda.server.pythonPath"
    ? "set coda.server.pythonPath to a Python that has coda-lsp installed, or clear it"
    : `set ${setting} to the full path of coda-lsp, e.g. ["/path/to/.venv/bin/coda-lsp"]`;
  if (!command.includes("/") && !command.includes("\\")) {
    return findOnPath(command) ? undefined
      : `${setting} runs "${command}", which is not on PATH (VS Code and code-server take PATH ` +
        `from your login shell): ${fix}`;
  }
  if (isExecutable(command)) {
    return undefined;
  }
  const what = fs.existsSync(command) ? "is not an executable file" : "does not exist";
  return `${setting} runs ${command}, which ${what}: ${fix}`;
}

/** Said when no way to start coda-lsp was found at all. */
export const NOT_FOUND =
  `coda-lsp not found (tried coda.server.command, coda.server.pythonPath, ${VENV_DIRS.join("/")} ` +
  "in the workspace folders, PATH as VS Code got it from your login shell, and " +
  "python.defaultInterpreterPath): install it (pip install /path/to/coda-lsp) and set " +
  'coda.server.command to its full path, e.g. ["/path/to/.venv/bin/coda-lsp"]';

/** The full command line, or undefined when no way to start coda-lsp was found. */
export function resolveServerCommand(): ServerCommand | undefined {
  const base = baseCommand();
  if (!base) {
    return undefined;
  }
  const config = vscode.workspace.getConfiguration("coda.server");
  const args = [...base.args];
  const modelPath = config.get<string>("modelPath") ?? "";
  if (modelPath) {
    args.push("--model", modelPath);
  }
  const device = config.get<string>("device") ?? "auto";
  if (device !== "auto") {
    args.push("--device", device);
  }
  args.push(...(config.get<string[]>("args") ?? []));
  return { command: base.command, args, source: base.source };
}
