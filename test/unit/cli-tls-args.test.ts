import { describe, expect, it } from 'vitest'
import { parseNginxArgs, parseUpArgs } from '../../packages/sessionmesh/src/cli/args.js'

describe('TLS and front-proxy options of the CLI', () => {
  it('nginx: a certificate and key together make HTTPS on 443 with a redirect from 80', () => {
    const args = parseNginxArgs([
      '--upstream',
      '10.0.0.1:3000',
      '--tls-cert',
      '/c.pem',
      '--tls-key',
      '/k.pem',
    ])
    expect(args).toMatchObject({
      tls: { cert: '/c.pem', key: '/k.pem' },
      listen: '443',
      httpListen: '80',
      http2: undefined,
      frontProxies: [],
    })
    expect(parseNginxArgs(['--upstream', '10.0.0.1:3000']).listen).toBe('80')
  })

  it('nginx: refuses half a certificate, and TLS-only options without TLS', () => {
    expect(() => parseNginxArgs(['--upstream', 'h:1', '--tls-cert', '/c.pem'])).toThrow(
      /go together/,
    )
    expect(() => parseNginxArgs(['--upstream', 'h:1', '--http-port', '8080'])).toThrow(
      /need --tls-cert/,
    )
    expect(() =>
      parseNginxArgs([
        '--upstream',
        'h:1',
        '--tls-cert',
        '/c',
        '--tls-key',
        '/k',
        '--http2',
        'yes',
      ]),
    ).toThrow(/--http2 must be one of/)
  })

  it('nginx: --http2 off and repeated --front-proxy', () => {
    const args = parseNginxArgs([
      '--upstream',
      'h:1',
      '--tls-cert',
      '/c',
      '--tls-key',
      '/k',
      '--http2',
      'off',
      '--front-proxy',
      '10.0.0.0/8',
      '--front-proxy',
      '192.0.2.1',
    ])
    expect(args.http2).toBe(false)
    expect(args.frontProxies).toEqual(['10.0.0.0/8', '192.0.2.1'])
  })

  it('up: --tls with --http-port; --http-port alone or on a taken port is refused', () => {
    expect(parseUpArgs(['--tls', '--http-port', '8079'])).toMatchObject({
      tls: true,
      httpPort: 8079,
    })
    expect(parseUpArgs([])).toMatchObject({ tls: false, httpPort: undefined })
    expect(() => parseUpArgs(['--http-port', '8079'])).toThrow(/needs --tls/)
    expect(() => parseUpArgs(['--tls', '--http-port', '8080'])).toThrow(/already --port/)
    expect(() => parseUpArgs(['--tls', '--http-port', '8081'])).toThrow(/a node port/)
  })
})
