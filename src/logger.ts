import { pino, type Logger } from 'pino';
import type { LogLevel } from './config/index.js';

/** JSON lines on stdout; request-scoped children add `reqId`. */
export function createLogger(level: LogLevel): Logger {
  return pino({ level, base: { service: 'protoprune' }, timestamp: pino.stdTimeFunctions.isoTime });
}
