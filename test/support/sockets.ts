import type { Socket as ClientSocket } from 'socket.io-client'

/** Resolves once the socket is connected; rejects with the server's refusal. */
export function connected(socket: ClientSocket): Promise<void> {
  return new Promise((resolve, reject) => {
    socket.once('connect', () => resolve())
    socket.once('connect_error', reject)
  })
}

/** Resolves with the message of the server's refusal; rejects if the socket connects. */
export function refused(socket: ClientSocket): Promise<string> {
  return new Promise((resolve, reject) => {
    socket.once('connect', () => reject(new Error('connected, but should have been refused')))
    socket.once('connect_error', (error) => resolve(error.message))
  })
}

/** Resolves with the reason (`session:ended` / disconnect) and the time the server closed the socket. */
export function closedByServer(socket: ClientSocket): Promise<{ reason: string; at: number }> {
  return new Promise((resolve) => {
    let reason = 'none'
    socket.once('session:ended', (event: { reason: string }) => {
      reason = event.reason
    })
    socket.once('disconnect', (why) => resolve({ reason: `${reason}/${why}`, at: Date.now() }))
  })
}
