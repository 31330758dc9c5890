import { DependencyContainer } from 'tsyringe';

/** Where a command writes; tests pass their own streams. */
export interface CommandIo {
  stdin: NodeJS.ReadableStream & { isTTY?: boolean; fd?: number };
  stdout: NodeJS.WritableStream & { isTTY?: boolean };
  stderr: NodeJS.WritableStream & { isTTY?: boolean };
}

/** One `ctmigratectl` sub-command. */
export interface Command {
  name: string;
  /** One line for the command list. */
  summary: string;
  /** Full --help text of the sub-command. */
  help: string;
  /** Runs the command; resolves to the exit status. */
  run(args: string[], container: DependencyContainer, io: CommandIo): Promise<number>;
}
