// RFC 9457 problem details: every error the API answers is one of these,
// as application/problem+json.

export interface FieldError {
  /** JSON Pointer (RFC 6901) into the request, led by its part: "/body/to/0", "/query/limit". */
  path: string;
  message: string;
}

export interface Problem {
  type: string;
  status: number;
  title: string;
  detail: string;
  errors?: FieldError[] | undefined;
}

const TITLES: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  409: 'Conflict',
  413: 'Content Too Large',
  415: 'Unsupported Media Type',
  422: 'Unprocessable Content',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
};

/** A refusal the routes throw; the error handler turns it into a problem. */
export class ApiError extends Error {
  readonly status: number;
  readonly errors: FieldError[] | undefined;
  constructor(status: number, detail: string, errors?: FieldError[]) {
    super(detail);
    this.status = status;
    this.errors = errors;
  }
}

export function problem(status: number, detail: string, errors?: FieldError[]): Problem {
  const p: Problem = { type: 'about:blank', status, title: TITLES[status] ?? 'Error', detail };
  if (errors) p.errors = errors;
  return p;
}

/** One invalid field. */
export function fieldError(status: number, path: string, message: string): ApiError {
  return new ApiError(status, `${path}: ${message}`, [{ path, message }]);
}
