import { spawnSync } from 'node:child_process'
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { UsageError } from './system.js'

/** Files of a throwaway certificate authority and one server certificate it signed. */
export interface ThrowawayTls {
  /** The CA certificate (PEM): what a client trusts, e.g. `curl --cacert`, NODE_EXTRA_CA_CERTS. */
  ca: string
  /** The server certificate (PEM), signed by the CA. */
  cert: string
  /** The server certificate's private key (PEM, mode 0600). */
  key: string
}

/** Options of {@link createThrowawayTls}. */
export interface ThrowawayTlsOptions {
  /** Directory to write the files into; created if missing. */
  dir: string
  /**
   * The names the certificate is valid for: IP addresses and DNS names.
   * @default ['127.0.0.1', 'localhost']
   */
  names?: readonly string[]
  /**
   * Days the CA and the certificate are valid.
   * @default 2
   */
  days?: number
  /**
   * The openssl executable.
   * @default 'openssl'
   */
  openssl?: string
}

/**
 * Makes a new CA (its key is never reused: a fresh one per call) and a server
 * certificate for `names` with openssl, as `sessionmesh up --tls` and the fleet
 * tests use them. Not for production: the CA key sits next to the certificates.
 *
 * @example
 * const tls = createThrowawayTls({ dir: '/tmp/tls', names: ['10.0.0.2', 'app.test'] })
 */
export function createThrowawayTls(options: ThrowawayTlsOptions): ThrowawayTls {
  const { dir } = options
  const names = options.names ?? ['127.0.0.1', 'localhost']
  const days = String(options.days ?? 2)
  const bin = options.openssl ?? 'openssl'
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  const path = (name: string) => join(dir, name)
  const altNames = names
    .map((name) => (/^[\d.]+$|:/.test(name) ? `IP:${name}` : `DNS:${name}`))
    .join(',')
  writeFileSync(
    path('server.ext'),
    [
      'basicConstraints=critical,CA:FALSE',
      'keyUsage=critical,digitalSignature,keyEncipherment',
      'extendedKeyUsage=serverAuth',
      `subjectAltName=${altNames}`,
      '',
    ].join('\n'),
  )
  // P-256 keys: fast to make and to handshake with.
  const key = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']
  const run = (args: string[]) => {
    const result = spawnSync(bin, args, { encoding: 'utf8' })
    if (result.error || result.status !== 0) {
      throw new UsageError(
        `openssl ${args[0]} failed: ${result.error?.message ?? result.stderr.trim()}\n` +
          'TLS needs openssl: sudo apt-get install openssl',
      )
    }
  }
  run([
    'req',
    '-x509',
    ...key,
    '-keyout',
    path('ca.key'),
    '-out',
    path('ca.pem'),
    '-days',
    days,
    '-subj',
    '/CN=sessionmesh throwaway CA',
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ])
  run([
    'req',
    ...key,
    '-keyout',
    path('server.key'),
    '-out',
    path('server.csr'),
    '-subj',
    `/CN=${names[0] ?? 'localhost'}`,
  ])
  run([
    'x509',
    '-req',
    '-in',
    path('server.csr'),
    '-CA',
    path('ca.pem'),
    '-CAkey',
    path('ca.key'),
    '-CAcreateserial',
    '-out',
    path('server.pem'),
    '-days',
    days,
    '-extfile',
    path('server.ext'),
  ])
  chmodSync(path('server.key'), 0o600)
  chmodSync(path('ca.key'), 0o600)
  return { ca: path('ca.pem'), cert: path('server.pem'), key: path('server.key') }
}
