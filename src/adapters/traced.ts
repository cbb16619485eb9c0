import type { EventPublisher } from '../domain/events/publisher.js';
import type { Tracing } from '../domain/shared/tracing.js';

/**
 * A provider adapter (payments, mailer, files) whose every method call is a client span
 * (`payments.charge`, `mailer.send`…) when tracing is on; the adapter itself when it is off. The span
 * is the active one while the call runs, so the SDK's HTTP calls and retries happen inside it.
 */
export function traced<T extends { readonly name: string }>(tracing: Tracing, port: string, adapter: T): T {
  if (!tracing.enabled) return adapter;
  // The port's own name for it ('stripe', 'sendgrid', 's3', 'simulated', 'local'…).
  const provider = adapter.name;
  return new Proxy(adapter, {
    get(target, property) {
      const value: unknown = Reflect.get(target, property, target);
      if (typeof value !== 'function' || typeof property !== 'string' || property === 'constructor') return value;
      const method = value as (...args: unknown[]) => unknown;
      return (...args: unknown[]) => {
        const span = tracing.start(`${port}.${property}`, { kind: 'client', attributes: { 'svc.port': port, 'svc.provider': provider } });
        let result: unknown;
        try {
          result = span.run(() => method.apply(target, args));
        } catch (err) {
          span.end(err);
          throw err;
        }
        if (!(result instanceof Promise)) {
          span.end();
          return result;
        }
        return result.then(
          (v: unknown) => {
            span.end();
            return v;
          },
          (err: unknown) => {
            span.end(err);
            throw err;
          },
        );
      };
    },
  });
}

/**
 * The publisher with a producer span per message (`publish <type>`), a child of the span that wrote
 * the outbox row (its traceparent): the message leaves with the producer span's traceparent, so
 * its consumer's span is that span's child. The publisher itself when tracing is off.
 */
export function tracedPublisher(tracing: Tracing, publisher: EventPublisher | undefined): EventPublisher | undefined {
  if (!publisher || !tracing.enabled) return publisher;
  return new Proxy(publisher, {
    get(target, property) {
      if (property === 'publish') {
        const publish: EventPublisher['publish'] = async (messages, tx) => {
          const spans = messages.map((m) =>
            tracing.start(`publish ${m.type}`, {
              kind: 'producer',
              parent: m.traceparent,
              attributes: {
                'messaging.system': target.kind === 'rabbitmq' ? 'rabbitmq' : 'svc-in-process',
                'messaging.operation.type': 'send',
                'messaging.message.id': m.id,
              },
            }),
          );
          try {
            await target.publish(
              messages.map((m, i) => ({ ...m, traceparent: spans[i]!.traceparent })),
              tx,
            );
          } catch (err) {
            for (const span of spans) span.end(err);
            throw err;
          }
          for (const span of spans) span.end();
        };
        return publish;
      }
      const value: unknown = Reflect.get(target, property, target);
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
}
