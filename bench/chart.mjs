// A grouped bar chart as SVG, turned into a PNG by Debian's Chromium through
// playwright-core (already a dev dependency), so the bench needs no new package.
import { existsSync, writeFileSync } from 'node:fs'

const COLORS = [
  '#9e9e9e',
  '#f4a261',
  '#e76f51',
  '#8ab17d',
  '#2a9d8f',
  '#264653',
  '#6d597a',
  '#b56576',
  '#e9c46a',
]

/** Writes `out` (PNG) and the SVG beside it from `{ group, series, value }` rows (value: ratio). */
export async function renderChart(rows, out) {
  const groups = [...new Set(rows.map((r) => r.group))]
  const series = [...new Set(rows.map((r) => r.series))]
  const width = 960
  const left = 60
  const top = 40
  const plotHeight = 300
  const groupWidth = (width - left - 20) / groups.length
  const bar = (groupWidth - 20) / series.length
  const max = Math.max(1.2, ...rows.map((r) => r.value))
  const y = (v) => top + plotHeight - (v / max) * plotHeight
  let svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${top + plotHeight + 60 + series.length * 18}" font-family="sans-serif" font-size="12" role="img" aria-label="throughput relative to express with no session">`
  svg += '<title>Throughput relative to Express with no session</title>'
  svg += '<rect width="100%" height="100%" fill="white"/>'
  svg += `<text x="${left}" y="22" font-size="15" font-weight="bold">Throughput relative to Express with no session (median req/s)</text>`
  for (let t = 0; t <= max + 1e-9; t += 0.25) {
    svg += `<line x1="${left}" x2="${width - 20}" y1="${y(t)}" y2="${y(t)}" stroke="${t === 1 ? '#333' : '#ddd'}"/>`
    svg += `<text x="${left - 6}" y="${y(t) + 4}" text-anchor="end">${Math.round(t * 100)}%</text>`
  }
  groups.forEach((group, g) => {
    const x0 = left + g * groupWidth + 10
    series.forEach((name, s) => {
      const row = rows.find((r) => r.group === group && r.series === name)
      if (!row) return
      const x = x0 + s * bar
      svg += `<rect x="${x}" y="${y(row.value)}" width="${bar - 2}" height="${top + plotHeight - y(row.value)}" fill="${COLORS[s % COLORS.length]}"/>`
      svg += `<text x="${x + bar / 2 - 1}" y="${y(row.value) - 3}" text-anchor="middle" font-size="10">${Math.round(row.value * 100)}</text>`
    })
    svg += `<text x="${x0 + (groupWidth - 20) / 2}" y="${top + plotHeight + 18}" text-anchor="middle">${xml(group)}</text>`
  })
  series.forEach((name, s) => {
    const ly = top + plotHeight + 40 + s * 18
    svg += `<rect x="${left}" y="${ly - 10}" width="12" height="12" fill="${COLORS[s % COLORS.length]}"/>`
    svg += `<text x="${left + 18}" y="${ly}">${xml(name)}</text>`
  })
  svg += '</svg>'
  const svgPath = out.replace(/\.png$/, '.svg')
  writeFileSync(svgPath, svg)
  const executablePath = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find(existsSync)
  if (!executablePath) {
    process.stderr.write(`no Chromium: wrote ${svgPath} only\n`)
    return
  }
  const { chromium } = await import('playwright-core')
  const browser = await chromium.launch({
    executablePath,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  })
  try {
    const page = await browser.newPage({ viewport: { width, height: 200 } })
    await page.setContent(`<html><body style="margin:0">${svg}</body></html>`)
    await page.locator('svg').screenshot({ path: out })
  } finally {
    await browser.close()
  }
}

function xml(text) {
  return String(text).replace(/&/g, '&amp;').replace(/</g, '&lt;')
}
