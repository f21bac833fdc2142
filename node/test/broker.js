// A real jobwire broker for the tests: `jobwire serve` from the repository's .venv, on a free
// port, with its own SQLite data directory. `JOBWIRE_BIN` overrides the executable.
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

const HERE = dirname(fileURLToPath(import.meta.url));
export const REPO = resolve(HERE, '..', '..');
export const VENV_BIN = join(REPO, '.venv', 'bin');
export const JOBWIRE = process.env.JOBWIRE_BIN ?? join(VENV_BIN, 'jobwire');
export const PYTHON = join(VENV_BIN, 'python');

if (!existsSync(JOBWIRE)) {
  throw new Error(`${JOBWIRE} not found: run \`make lint\` (or \`make .venv/.installed\`) in ${REPO} first`);
}

export class Broker {
  constructor(args = []) {
    this.args = args;
    this.dataDir = mkdtempSync(join(tmpdir(), 'jobwire-node-'));
    this.port = 0;
    this.proc = null;
    this.log = [];
  }

  get url() {
    return `jobwire://127.0.0.1:${this.port}`;
  }

  /** Start `jobwire serve` (on the same port as before when restarted); resolve when it listens. */
  start() {
    const proc = spawn(JOBWIRE, [
      'serve', '--host', '127.0.0.1', '--port', String(this.port), '--data-dir', this.dataDir,
      '--log-format', 'json', ...this.args,
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc = proc;
    return new Promise((resolvePromise, reject) => {
      const timer = setTimeout(() => reject(new Error(`broker did not listen:\n${this.log.join('\n')}`)), 30_000);
      const onLine = (line) => {
        this.log.push(line);
        if (this.log.length > 200) this.log.shift();
        let entry;
        try { entry = JSON.parse(line); } catch { return; }
        if (entry.event === 'listening') {
          this.port = entry.port;
          clearTimeout(timer);
          resolvePromise(this);
        }
      };
      createInterface({ input: proc.stdout }).on('line', onLine);
      createInterface({ input: proc.stderr }).on('line', onLine);
      proc.on('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`broker exited with ${code}:\n${this.log.join('\n')}`));
      });
    });
  }

  /** SIGKILL the broker and wait for it to be gone. */
  kill() {
    return this.signal('SIGKILL');
  }

  /** SIGTERM (drain and stop) and wait. */
  terminate() {
    return this.signal('SIGTERM');
  }

  signal(name) {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
    return new Promise((resolvePromise) => {
      proc.once('exit', () => resolvePromise());
      proc.kill(name);
    });
  }

  async stop() {
    await this.kill();
    rmSync(this.dataDir, { recursive: true, force: true });
  }

  /**
   * Run the `jobwire` CLI against this broker; resolves with its stdout. Asynchronous, so the
   * test process (an HTTP server, workers) keeps running meanwhile.
   */
  async cli(...args) {
    try {
      const { stdout } = await execFileAsync(JOBWIRE, [...args, '--url', this.url], { encoding: 'utf8' });
      return stdout;
    } catch (error) {
      throw new Error(`jobwire ${args.join(' ')} failed: ${error.stderr ?? error.message}`);
    }
  }
}

/** Start a broker for a test file; returns it (stop it in `after`). */
export async function startBroker(args = []) {
  return new Broker(args).start();
}

/** Poll `check` until it returns a truthy value (or throw after `ms`). */
export async function eventually(check, ms = 10_000, what = 'condition') {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

let counter = 0;
/** A queue name unique within this process. */
export function queueName(prefix = 'q') {
  counter += 1;
  return `${prefix}-${process.pid}-${counter}`;
}
