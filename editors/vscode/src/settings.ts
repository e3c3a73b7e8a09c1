// Which `coda.*` settings go to the server, and their current values.
//
// The server's settings are every `coda.*` property in package.json except the client-side
// ones under `coda.server.*` and `coda.trace.*`. Reading the list from package.json keeps one
// source of truth (tests/editors/test_settings_agree.py checks it against the server's
// dataclass). This module does not talk to the server.
import * as vscode from "vscode";

const SECTION = "coda";
const CLIENT_ONLY_PREFIXES = ["server.", "trace."];

/** Setting names (without the `coda.` prefix) that the server understands. */
export function serverSettingNames(packageJson: any): string[] {
  const properties: Record<string, unknown> =
    packageJson?.contributes?.configuration?.properties ?? {};
  return Object.keys(properties)
    .filter((key) => key.startsWith(SECTION + "."))
    .map((key) => key.slice(SECTION.length + 1))
    .filter((name) => !CLIENT_ONLY_PREFIXES.some((prefix) => name.startsWith(prefix)));
}

/** The camelCase settings object the server takes in initializationOptions and
 * `workspace/didChangeConfiguration` (`{"settings": {"coda": <this>}}`). Effective values,
 * defaults included, so that removing a user setting resets it on the server too. */
export function serverSettings(names: string[]): Record<string, unknown> {
  const config = vscode.workspace.getConfiguration(SECTION);
  const settings: Record<string, unknown> = {};
  for (const name of names) {
    settings[name] = config.get(name);
  }
  return settings;
}

/** Whether a configuration change needs a new server process (its command line changed). */
export function needsRestart(event: vscode.ConfigurationChangeEvent): boolean {
  return event.affectsConfiguration(`${SECTION}.server`);
}

/** Whether a configuration change is one the running server should hear about. */
export function affectsServer(event: vscode.ConfigurationChangeEvent, names: string[]): boolean {
  return names.some((name) => event.affectsConfiguration(`${SECTION}.${name}`));
}
