export {
  type Backend,
  type BusState,
  type CallOptions,
  cappedExpiry,
  EVENT_PROTOCOL_VERSION,
  formatEvent,
  type IndexedSession,
  LateCallError,
  type LimitedWriteResult,
  MalformedRecordError,
  parseEvent,
  type SessionEvent,
  type SessionLimitRule,
  type SessionMeta,
  type SessionTouch,
  type SessionWrite,
  type StoredSession,
  type WriteResult,
} from './core/backend.js'
export { decodeSession, encodedSize, encodeSession, type SessionData } from './core/codec.js'
export {
  type EncryptionKey,
  type EncryptionOptions,
  parseEncryptionKeys,
} from './core/encryption.js'
export {
  ErrorCode,
  InvalidOptionError,
  NotSupportedError,
  SessionLimitError,
  SessionMeshError,
  SessionTooLargeError,
  StoreUnavailableError,
} from './core/errors.js'
export {
  type DestroyReason,
  type SessionLifecycleEvent,
  sessionChannel,
} from './core/events.js'
export type { NearCacheOptions, NearCacheStats } from './core/near-cache.js'
export { channels } from './core/telemetry.js'
export type { MetricsOptions } from './metrics.js'
export {
  type Callback,
  passportUser,
  SessionStore,
  type SessionStoreOptions,
  type UserSession,
} from './store.js'
