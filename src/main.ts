import { ConfigError, loadConfig, type Config } from './config/index.js';
import { createLogger } from './logger.js';
import { startService } from './server.js';

/** Exit status for configuration errors (sysexits.h EX_CONFIG). */
const EXIT_CONFIG = 78;

function readConfig(): Config {
  try {
    return loadConfig();
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`protoprune: ${error.message}\n`);
      process.exit(EXIT_CONFIG);
    }
    throw error;
  }
}

const config = readConfig();
const logger = createLogger(config.logLevel);

try {
  const service = await startService(config, logger);
  logger.info({ port: service.httpPort, grpcPort: service.grpc.port, backend: service.db.backend }, 'protoprune ready');

  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    signals += 1;
    if (signals > 1) {
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    logger.info({ signal }, 'shutting down');
    service.stop().then(
      () => {
        logger.info('stopped cleanly');
        process.exit(0);
      },
      (error: unknown) => {
        logger.error({ err: error }, 'error during shutdown');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  // Every call's failure is answered where it happens. A rejection nobody handled is a bug, logged
  // loudly so tests catch it, but it must not take every other client's requests down with it.
  process.on('unhandledRejection', (reason) => logger.error({ err: reason }, 'unhandled promise rejection (a bug)'));
} catch (error) {
  logger.fatal({ err: error }, 'boot failed');
  process.exit(1);
}
