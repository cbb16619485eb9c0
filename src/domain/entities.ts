import { UserSchema } from './users/user.entity.js';
import { ProductSchema } from './catalog/product.entity.js';
import { OrderSchema, OrderItemSchema } from './orders/order.entity.js';
import { AuditEntrySchema } from './audit/audit.entity.js';
import { ApiKeySchema, RefreshTokenSchema } from './auth/auth.entities.js';
import { IdempotencyRecordSchema } from './idempotency/idempotency.entity.js';
import { AppSecretSchema } from './shared/app-secret.entity.js';
import { LoginThrottleSchema } from './auth/login-throttle.entity.js';
import { OutboxEventSchema } from './events/outbox.entity.js';
import { ProcessedMessageSchema } from './events/processed-message.entity.js';
import { PaymentSchema } from './payments/payment.entity.js';
import { StoredFileSchema } from './files/stored-file.entity.js';
import { StripeEventSchema } from './payments/stripe-event.entity.js';
import { OrderDisputeSchema } from './payments/dispute.entity.js';
import { EventDeliverySchema } from './events/event-delivery.entity.js';

/** Every entity of the domain, registered with the ORM by the composition root. */
export const entities = [
  UserSchema,
  ProductSchema,
  OrderSchema,
  OrderItemSchema,
  AuditEntrySchema,
  RefreshTokenSchema,
  ApiKeySchema,
  IdempotencyRecordSchema,
  AppSecretSchema,
  LoginThrottleSchema,
  OutboxEventSchema,
  ProcessedMessageSchema,
  PaymentSchema,
  StoredFileSchema,
  StripeEventSchema,
  OrderDisputeSchema,
  EventDeliverySchema,
];
