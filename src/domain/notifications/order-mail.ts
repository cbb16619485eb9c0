import type { Ctx } from '../shared/context.js';

/** What an order email is about: the order, its lines and its customer. Money in minor units of `currency`. */
export interface OrderMailData {
  orderId: string;
  status: string;
  customer: { name: string; email: string };
  lines: { name: string; sku: string; quantity: number; unitPrice: number }[];
  total: number;
  currency: string;
}

/** A row of ORDER_MAIL_SELECT. */
export interface OrderMailRow {
  id: string;
  status: string;
  total: number;
  currency: string;
  user_name: string;
  user_email: string;
  lines: OrderMailData['lines'] | null;
}

/** The statement that reads an order's mail data (`$1`: the order id): one row, or none when the order is gone. */
export const ORDER_MAIL_SELECT = `select o.id, o.status, o.total, o.currency, u.name as user_name, u.email as user_email,
       (select json_agg(json_build_object('name', i.name, 'sku', i.sku, 'quantity', i.quantity, 'unitPrice', i.unit_price) order by i.id)
          from order_items i where i.order_id = o.id) as lines
     from orders o join users u on u.id = o.user_id where o.id = $1`;

/** The mail data of a row of ORDER_MAIL_SELECT. */
export function orderMailFromRow(row: OrderMailRow): OrderMailData {
  return {
    orderId: row.id,
    status: row.status,
    customer: { name: row.user_name, email: row.user_email },
    lines: row.lines ?? [],
    total: row.total,
    currency: row.currency,
  };
}

/** The order and its customer's address, in the caller's transaction; undefined when the order is gone. */
export async function orderMailData(tx: Ctx, orderId: string): Promise<OrderMailData | undefined> {
  const [row] = await tx.sql<OrderMailRow>(ORDER_MAIL_SELECT, [orderId]);
  return row && orderMailFromRow(row);
}

// The payment provider's decline codes (Stripe's, which the simulated provider shares) in the words
// a customer reads: what happened and what to do. Never the raw code alone.
const FAILURE_WORDS: Record<string, string> = {
  card_declined: 'your card was declined by its issuer. Please use another card, or ask your bank why it was declined.',
  insufficient_funds: 'your card has insufficient funds. Please use another card.',
  expired_card: 'your card has expired. Please use a card that is still valid.',
  incorrect_cvc: "your card's security code (CVC) was not accepted. Please check it, or use another card.",
  incorrect_number: 'the card number was not accepted. Please check it, or use another card.',
  processing_error: 'an error occurred while your card was being processed. Nothing was charged; please try again in a few minutes.',
  authentication_required:
    'your bank asked you to confirm the payment (3-D Secure), which cannot be done for this order. Please place it again and confirm the payment when your bank asks.',
  resource_missing: 'the payment method could not be found. Please place the order again with another card.',
  payment_method_missing: 'the order had no payment method. Please place it again with a card.',
};

/** Why a payment failed, in a customer's words, for a provider's failure code (a general sentence for an unknown one). */
export function paymentFailureWords(code: string | undefined): string {
  return (code && FAILURE_WORDS[code]) ?? 'the payment was not accepted. Please place the order again with another payment method.';
}
