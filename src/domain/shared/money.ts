// ISO 4217 minor-unit exponents that are not 2. Amounts are always integer minor units in the domain.
const EXPONENTS: Record<string, number> = {
  BIF: 0,
  CLP: 0,
  DJF: 0,
  GNF: 0,
  ISK: 0,
  JPY: 0,
  KMF: 0,
  KRW: 0,
  PYG: 0,
  RWF: 0,
  UGX: 0,
  UYI: 0,
  VND: 0,
  VUV: 0,
  XAF: 0,
  XOF: 0,
  XPF: 0,
  BHD: 3,
  IQD: 3,
  JOD: 3,
  KWD: 3,
  LYD: 3,
  OMR: 3,
  TND: 3,
};

/** Digits after the decimal point for a currency (2 unless ISO 4217 says otherwise). */
export const minorDigits = (currency: string): number => EXPONENTS[currency] ?? 2;

/** Minor units as a decimal number of major units: 4900 USD -> 49, 4950 USD -> 49.5. */
export const toMajor = (amount: number, currency: string): number => amount / 10 ** minorDigits(currency);

/** Major units to integer minor units, rejecting more decimals than the currency has. */
export function toMinor(major: number, currency: string): number | undefined {
  const minor = major * 10 ** minorDigits(currency);
  const rounded = Math.round(minor);
  return Math.abs(minor - rounded) < 1e-6 ? rounded : undefined;
}

/** A display string for operators: `49.00 USD`. */
export const formatMoney = (amount: number, currency: string): string => `${toMajor(amount, currency).toFixed(minorDigits(currency))} ${currency}`;

export const CURRENCY_PATTERN = '^[A-Z]{3}$';
