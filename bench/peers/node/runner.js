'use strict';
// Peer runner: npm `nacos` (its NacosNamingClient comes from nacos-naming),
// v1 HTTP beats from its BeatReactor.
//
// Usage: node runner.js SERVER_ADDR N SECONDS SERVICE_PREFIX
//
// Registers N ephemeral instances 10.255.x.y:port (never contacted) in
// service `<prefix>-node`. Prints `ready <n>` once every registerInstance
// promise has resolved, `done` after SECONDS, then exits without
// deregistering (the instances expire on the server).

const { NacosNamingClient } = require('nacos');

// Same policy as the other runners: warnings and errors to stderr, the rest dropped.
const logger = {
  debug() {},
  info() {},
  log() {},
  warn: (...a) => console.error('WARN', ...a),
  error: (...a) => console.error('ERROR', ...a),
};

const ip = i => `10.255.${Math.floor(i / 200)}.${(i % 200) + 1}`;
const port = i => 20000 + i;

async function main() {
  const argv = process.argv.slice(2);
  if (argv.length !== 4) {
    console.error('usage: node runner.js SERVER_ADDR N SECONDS SERVICE_PREFIX');
    process.exit(2);
  }
  const [server, nStr, secondsStr, prefix] = argv;
  const n = Number(nStr);
  const seconds = Number(secondsStr);
  const service = `${prefix}-node`;

  const client = new NacosNamingClient({ logger, serverList: server, namespace: 'public' });
  await client.ready();

  for (let i = 0; i < n; i++) {
    await client.registerInstance(service, { ip: ip(i), port: port(i) });
  }
  process.stdout.write(`ready ${n}\n`);

  await new Promise(resolve => setTimeout(resolve, seconds * 1000));
  process.stdout.write('done\n', () => process.exit(0));
}

main().catch(err => {
  console.error(err);
  process.exit(1);
});
