import type { Browser, Page } from 'playwright-core'

export declare const CHROMIUM_ARGS: readonly string[]
export declare function launchChromium(extra?: string[]): Promise<Browser>
export declare function signIn(page: Page, user: string): Promise<void>
