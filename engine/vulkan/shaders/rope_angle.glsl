// RoPE angle helpers shared by rope.comp and kv_norm_store.comp (see rope.comp's header for the
// precision argument).
// Exact a*b - prod for prod = fl(a*b) (Dekker, with Veltkamp splitting into 12-bit halves).
precise float product_error(float a, float b, float prod) {
  precise float ta = 4097.0 * a;
  precise float ah = ta - (ta - a);
  precise float al = a - ah;
  precise float tb = 4097.0 * b;
  precise float bh = tb - (tb - b);
  precise float bl = b - bh;
  return ((ah * bh - prod) + ah * bl + al * bh) + al * bl;
}

// pos * (hi + lo) reduced to about [-pi, pi].
precise float reduced_angle(float fpos, vec2 th) {
  precise float a = fpos * th.x;
  precise float err = product_error(fpos, th.x, a) + fpos * th.y;
  // 2*pi = C1 + C2 + C3; C1 (8 significant bits) and C2 (8 bits) times k < 2^16 are exact, and so
  // are the subtractions (their results need fewer than 24 bits).
  const float C1 = 6.28125;
  const float C2 = 0.00193023681640625;    // 253 / 2^17
  const float C3 = 5.070363179981996e-06;  // 2*pi - C1 - C2
  precise float k = floor(a * 0.15915494309189535 + 0.5);
  precise float r = (a - k * C1) - k * C2;
  return (r - k * C3) + err;
}
