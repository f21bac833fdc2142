/**
 * The package's logger: silent unless the application asks. `NODE_DEBUG=jobwire` prints through
 * Node's `util.debuglog`; an application that wants the lines elsewhere passes `logger`.
 */

import { debuglog } from 'node:util';

/** What the package logs through: any object with these methods (console, pino, winston...). */
export interface Logger {
  debug(message: string, ...args: unknown[]): void;
  warn(message: string, ...args: unknown[]): void;
}

const debug = debuglog('jobwire');

/** The default: `NODE_DEBUG=jobwire` shows both levels, otherwise nothing is printed. */
export const defaultLogger: Logger = {
  debug: (message, ...args) => debug(message, ...args),
  warn: (message, ...args) => debug(`warning: ${message}`, ...args),
};
