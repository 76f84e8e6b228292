import { request as httpRequest } from 'node:http'
import { request as httpsRequest } from 'node:https'

/** What {@link tlsRequest} got back. */
export interface TlsResponse {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: string
}

/**
 * One request with its own trust: `ca` is the only CA accepted for https (Node's
 * fetch cannot take one per call). A fresh connection each time, so every request
 * runs a full handshake.
 */
export function tlsRequest(
  url: string,
  options: { ca?: string; method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<TlsResponse> {
  const target = new URL(url)
  const send = target.protocol === 'https:' ? httpsRequest : httpRequest
  return new Promise((resolve, reject) => {
    const request = send(
      target,
      {
        method: options.method ?? 'GET',
        headers: options.headers ?? {},
        agent: false,
        ...(options.ca ? { ca: options.ca } : {}),
        timeout: 10_000,
      },
      (response) => {
        let body = ''
        response.setEncoding('utf8')
        response.on('data', (chunk: string) => {
          body += chunk
        })
        response.on('end', () =>
          resolve({ status: response.statusCode ?? 0, headers: response.headers, body }),
        )
      },
    )
    request.once('error', reject)
    request.once('timeout', () => request.destroy(new Error(`timed out: ${url}`)))
    request.end(options.body)
  })
}
