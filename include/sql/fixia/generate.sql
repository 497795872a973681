-- Deterministic synthetic data for the Fixia reference database.
--
-- Parameters (bound by pgops.devstack.seed): %(scale)s, an integer scale factor, and
-- %(anchor)s, the timestamptz that "now" means for the data: created_at values spread
-- over the 730 days before it, denser towards it (a growing marketplace). The same
-- scale and anchor give the same rows, byte for byte: every "random" choice is
-- hashint8extended(row number, salt), never random().
--
-- Rows per scale unit (proportions from the optimization plan's daily rates:
-- notifications ~100K/day, user_activity ~50K/day, payments ~5K/day, reviews ~500/day):
--   users 10,000 · services 20,000 · projects 15,000 · jobs ~9,750
--   reviews 5,000 · payments 50,000 · user_activity 500,000 · notifications 1,000,000
-- Categories are a fixed tree of 8 parents and 32 children.
--
-- User types follow the id: id mod 10 in (1,2,3) professional, 4 dual, else client.
-- So "a random professional" is 10*k + 1 + (h mod 4), and "a random client" is
-- 10*k + 4 + (h mod 7), both always valid ids. Steps are split on "-- step:" lines so
-- the loader can report progress and time each one.

-- step: helpers
CREATE FUNCTION pg_temp.u(g bigint, salt bigint) RETURNS double precision
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT (hashint8extended(g, salt) & 9223372036854775807)::double precision / 9223372036854775807.0 $$;

CREATE FUNCTION pg_temp.pick(arr text[], g bigint, salt bigint) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT arr[1 + floor(pg_temp.u(g, salt) * cardinality(arr))::int] $$;

-- Skewed towards the anchor: sqrt of a uniform variable puts more rows in recent months.
CREATE FUNCTION pg_temp.ts(anchor timestamptz, g bigint, salt bigint) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT anchor - (1.0 - sqrt(pg_temp.u(g, salt))) * interval '730 days' - interval '1 minute' $$;

-- step: categories
INSERT INTO fixia.categories (id, name, slug, parent_id, created_at)
SELECT p.id, p.name, p.slug, NULL, %(anchor)s::timestamptz - interval '730 days'
FROM (VALUES
    (1, 'Hogar', 'hogar'), (2, 'Tecnología', 'tecnologia'), (3, 'Diseño', 'diseno'),
    (4, 'Educación', 'educacion'), (5, 'Salud y bienestar', 'salud-y-bienestar'),
    (6, 'Eventos', 'eventos'), (7, 'Transporte', 'transporte'), (8, 'Negocios', 'negocios')
) AS p (id, name, slug);

INSERT INTO fixia.categories (id, name, slug, parent_id, created_at)
SELECT 8 + row_number() OVER (ORDER BY c.parent_id, c.ord), c.name, c.slug, c.parent_id,
       %(anchor)s::timestamptz - interval '730 days'
FROM (VALUES
    (1, 1, 'Plomería', 'plomeria'), (1, 2, 'Electricidad', 'electricidad'),
    (1, 3, 'Pintura', 'pintura'), (1, 4, 'Carpintería', 'carpinteria'),
    (2, 1, 'Desarrollo web', 'desarrollo-web'), (2, 2, 'Aplicaciones móviles', 'aplicaciones-moviles'),
    (2, 3, 'Soporte técnico', 'soporte-tecnico'), (2, 4, 'Redes y servidores', 'redes-y-servidores'),
    (3, 1, 'Diseño gráfico', 'diseno-grafico'), (3, 2, 'Diseño de interiores', 'diseno-de-interiores'),
    (3, 3, 'Fotografía', 'fotografia'), (3, 4, 'Edición de video', 'edicion-de-video'),
    (4, 1, 'Clases de idiomas', 'clases-de-idiomas'), (4, 2, 'Apoyo escolar', 'apoyo-escolar'),
    (4, 3, 'Clases de música', 'clases-de-musica'), (4, 4, 'Cursos de programación', 'cursos-de-programacion'),
    (5, 1, 'Entrenamiento personal', 'entrenamiento-personal'), (5, 2, 'Nutrición', 'nutricion'),
    (5, 3, 'Masajes', 'masajes'), (5, 4, 'Yoga', 'yoga'),
    (6, 1, 'Catering', 'catering'), (6, 2, 'Decoración de eventos', 'decoracion-de-eventos'),
    (6, 3, 'Música para fiestas', 'musica-para-fiestas'), (6, 4, 'Organización de eventos', 'organizacion-de-eventos'),
    (7, 1, 'Mudanzas', 'mudanzas'), (7, 2, 'Fletes', 'fletes'),
    (7, 3, 'Mensajería', 'mensajeria'), (7, 4, 'Chofer particular', 'chofer-particular'),
    (8, 1, 'Contabilidad', 'contabilidad'), (8, 2, 'Marketing digital', 'marketing-digital'),
    (8, 3, 'Asesoría legal', 'asesoria-legal'), (8, 4, 'Traducción', 'traduccion')
) AS c (parent_id, ord, name, slug);

-- step: users
INSERT INTO fixia.users (id, email, name, user_type, city, phone, created_at, updated_at)
SELECT g,
       'usuario' || g || '@fixia.example',
       pg_temp.pick(ARRAY['María','José','Lucía','Juan','Sofía','Carlos','Valentina','Miguel',
                          'Camila','Javier','Martina','Diego','Florencia','Pablo','Agustina',
                          'Andrés','Paula','Fernando','Julieta','Ricardo'], g, 1)
           || ' ' ||
       pg_temp.pick(ARRAY['García','Fernández','González','Rodríguez','López','Martínez',
                          'Sánchez','Pérez','Gómez','Díaz','Romero','Álvarez','Torres',
                          'Ruiz','Ramírez','Flores','Acosta','Benítez','Medina','Herrera'], g, 2),
       CASE WHEN mod(g, 10) IN (1, 2, 3) THEN 'professional'
            WHEN mod(g, 10) = 4 THEN 'dual'
            ELSE 'client' END::fixia.user_type,
       pg_temp.pick(ARRAY['Buenos Aires','Córdoba','Rosario','Mendoza','La Plata','Mar del Plata',
                          'Salta','Tucumán','Neuquén','Santa Fe','Bahía Blanca','Posadas'], g, 3),
       '+54 9 11 ' || lpad((mod(hashint8extended(g, 4) & 9223372036854775807, 100000000))::text, 8, '0'),
       pg_temp.ts(%(anchor)s, g, 5),
       pg_temp.ts(%(anchor)s, g, 5)
FROM generate_series(1, 10000 * %(scale)s::bigint) AS g;

-- step: professional_profiles
INSERT INTO fixia.professional_profiles (id, user_id, bio, specialties, years_experience,
                                         hourly_rate, verified, created_at)
SELECT row_number() OVER (ORDER BY u.id), u.id,
       'Profesional con ' || (1 + mod(u.id, 25)) || ' años de experiencia. '
           || pg_temp.pick(ARRAY['Trabajo prolijo y puntual.','Presupuesto sin cargo.',
                                 'Atención personalizada en toda la ciudad.',
                                 'Garantía escrita en todos los trabajos.',
                                 'Me especializo en soluciones rápidas y duraderas.'], u.id, 11),
       ARRAY[pg_temp.pick(ARRAY['plomería','electricidad','pintura','diseño','programación',
                                'fotografía','contabilidad','mudanzas','idiomas','nutrición'], u.id, 12),
             pg_temp.pick(ARRAY['urgencias','presupuestos','asesoría','mantenimiento',
                                'instalación','reparación'], u.id, 13)],
       1 + mod(u.id, 25),
       round((1500 + pg_temp.u(u.id, 14) * 18500)::numeric, 2),
       pg_temp.u(u.id, 15) < 0.6,
       u.created_at
FROM fixia.users AS u
WHERE u.user_type IN ('professional', 'dual');

-- step: services
INSERT INTO fixia.services (id, professional_id, category_id, title, description, tags, price,
                            active, featured, view_count, created_at, updated_at)
SELECT s.g, s.professional_id, s.category_id,
       pg_temp.pick(ARRAY['Servicio de','Reparación y','Asesoría en','Clases de',
                          'Presupuesto de','Atención urgente de'], s.g, 22)
           || ' ' || lower(c.name) || ' '
           || pg_temp.pick(ARRAY['a domicilio','en el día','con garantía','para empresas',
                                 'para particulares','económico','profesional'], s.g, 23),
       'Ofrezco ' || lower(c.name) || ' ' ||
       pg_temp.pick(ARRAY['con materiales de primera calidad.','con más de diez años en el rubro.',
                          'adaptado a tu presupuesto.','con turnos flexibles, incluso fines de semana.',
                          'y seguimiento posterior sin costo.'], s.g, 24) || ' ' ||
       pg_temp.pick(ARRAY['Consultá disponibilidad por mensaje.','Respondo en menos de una hora.',
                          'Emitimos factura.','Zona de cobertura amplia.',
                          'Trabajo con cita previa.'], s.g, 25),
       ARRAY[c.slug,
             pg_temp.pick(ARRAY['urgente','garantia','domicilio','empresas','economico','calidad'], s.g, 26)],
       round((500 + pg_temp.u(s.g, 27) * pg_temp.u(s.g, 28) * 99500)::numeric, 2),
       pg_temp.u(s.g, 29) < 0.85,
       pg_temp.u(s.g, 30) < 0.05,
       floor(pg_temp.u(s.g, 31) * pg_temp.u(s.g, 32) * 5000)::int,
       s.created_at, s.created_at
FROM (
    SELECT g,
           10 * floor(pg_temp.u(g, 20) * (1000 * %(scale)s::bigint))::bigint + 1
               + mod(hashint8extended(g, 21) & 9223372036854775807, 4) AS professional_id,
           9 + mod(hashint8extended(g, 33) & 9223372036854775807, 32) AS category_id,
           pg_temp.ts(%(anchor)s, g, 34) AS created_at
    FROM generate_series(1, 20000 * %(scale)s::bigint) AS g
) AS s
JOIN fixia.categories AS c ON c.id = s.category_id;

-- step: projects
INSERT INTO fixia.projects (id, client_id, category_id, title, description, skills_required,
                            budget, status, created_at, updated_at)
SELECT p.g, p.client_id, p.category_id,
       pg_temp.pick(ARRAY['Necesito','Busco profesional para','Presupuesto para',
                          'Urgente:','Proyecto de'], p.g, 42) || ' ' || lower(c.name)
           || ' ' || pg_temp.pick(ARRAY['en mi casa','para mi negocio','esta semana',
                                        'en departamento','para oficina'], p.g, 43),
       'Hola, ' || pg_temp.pick(ARRAY['necesito ayuda con','quiero cotizar','estoy buscando a alguien para'],
                                p.g, 44)
           || ' ' || lower(c.name) || '. '
           || pg_temp.pick(ARRAY['Prefiero profesionales con referencias.','El trabajo es en zona centro.',
                                 'Puedo coordinar horarios por la tarde.','Adjunto fotos si hace falta.'],
                           p.g, 45),
       ARRAY[c.slug, pg_temp.pick(ARRAY['responsabilidad','puntualidad','experiencia',
                                        'herramientas propias','factura'], p.g, 46)],
       round((2000 + pg_temp.u(p.g, 47) * 198000)::numeric, 2),
       CASE WHEN p.r < 0.25 THEN 'open'
            WHEN p.r < 0.40 THEN 'in_progress'
            WHEN p.r < 0.90 THEN 'completed'
            ELSE 'cancelled' END::fixia.project_status,
       p.created_at, p.created_at
FROM (
    SELECT g,
           10 * floor(pg_temp.u(g, 40) * (1000 * %(scale)s::bigint))::bigint + 4
               + mod(hashint8extended(g, 41) & 9223372036854775807, 7) AS client_id,
           9 + mod(hashint8extended(g, 48) & 9223372036854775807, 32) AS category_id,
           pg_temp.u(g, 49) AS r,
           pg_temp.ts(%(anchor)s, g, 50) AS created_at
    FROM generate_series(1, 15000 * %(scale)s::bigint) AS g
) AS p
JOIN fixia.categories AS c ON c.id = p.category_id;

-- step: jobs
-- One job per project that went ahead; completed projects end in a completed job, 5%%
-- of them disputed. Every later timestamp is a fraction of the way from the earlier
-- one to the anchor, so nothing lands after it.
INSERT INTO fixia.jobs (id, project_id, professional_id, agreed_price, status, started_at,
                        completed_at, created_at)
SELECT row_number() OVER (ORDER BY p.id), p.id,
       10 * floor(pg_temp.u(p.id, 60) * (1000 * %(scale)s::bigint))::bigint + 1
           + mod(hashint8extended(p.id, 61) & 9223372036854775807, 4),
       round(p.budget * (0.8 + 0.3 * pg_temp.u(p.id, 62))::numeric, 2),
       j.status,
       j.started_at,
       CASE WHEN j.status IN ('completed', 'disputed')
            THEN j.started_at + (%(anchor)s::timestamptz - j.started_at) * (0.05 + 0.3 * pg_temp.u(p.id, 64)) END,
       p.created_at + (%(anchor)s::timestamptz - p.created_at) * 0.01
FROM fixia.projects AS p
CROSS JOIN LATERAL (
    SELECT CASE WHEN p.status = 'in_progress' THEN 'in_progress'
                WHEN pg_temp.u(p.id, 63) < 0.05 THEN 'disputed'
                ELSE 'completed' END::fixia.job_status AS status,
           p.created_at + (%(anchor)s::timestamptz - p.created_at) * (0.02 + 0.08 * pg_temp.u(p.id, 65)) AS started_at
) AS j
WHERE p.status IN ('in_progress', 'completed');

-- step: reviews
INSERT INTO fixia.reviews (id, professional_id, reviewer_id, service_id, job_id, rating,
                           comment, created_at)
SELECT g, j.professional_id, p.client_id,
       coalesce(same_category.id, any_service.id),
       j.id,
       CASE WHEN r.x < 0.05 THEN 1 WHEN r.x < 0.10 THEN 2 WHEN r.x < 0.22 THEN 3
            WHEN r.x < 0.50 THEN 4 ELSE 5 END,
       pg_temp.pick(ARRAY['Excelente trabajo, muy recomendable.','Llegó puntual y dejó todo limpio.',
                          'Buen precio y buena atención.','Tardó más de lo acordado.',
                          'Resolvió el problema rápido.','No volvería a contratarlo.',
                          'Muy profesional y amable.','Cumplió con lo pactado.'], g, 71),
       j.completed_at + (%(anchor)s::timestamptz - j.completed_at) * 0.2 * pg_temp.u(g, 72)
FROM (
    SELECT g, 1 + floor(pg_temp.u(g, 70) * (SELECT count(*) FROM fixia.jobs WHERE status = 'completed'))::bigint AS k,
           pg_temp.u(g, 73) AS x
    FROM generate_series(1, 5000 * %(scale)s::bigint) AS g
) AS r
JOIN (SELECT jb.*, row_number() OVER (ORDER BY jb.id) AS k
        FROM fixia.jobs AS jb WHERE jb.status = 'completed') AS j ON j.k = r.k
JOIN fixia.projects AS p ON p.id = j.project_id
LEFT JOIN (SELECT DISTINCT ON (professional_id, category_id) professional_id, category_id, id
             FROM fixia.services ORDER BY professional_id, category_id, id) AS same_category
       ON same_category.professional_id = j.professional_id AND same_category.category_id = p.category_id
LEFT JOIN (SELECT DISTINCT ON (professional_id) professional_id, id
             FROM fixia.services ORDER BY professional_id, id) AS any_service
       ON any_service.professional_id = j.professional_id;

-- step: payments
INSERT INTO fixia.payments (id, job_id, payer_id, payee_id, amount, currency, method, status,
                            created_at)
SELECT x.g, j.id, p.client_id, j.professional_id,
       round(greatest(j.agreed_price * (0.1 + 0.4 * pg_temp.u(x.g, 81)), 1)::numeric, 2),
       'ARS',
       pg_temp.pick(ARRAY['tarjeta_credito','tarjeta_debito','transferencia','mercado_pago','efectivo'], x.g, 82),
       CASE WHEN x.r < 0.85 THEN 'completed' WHEN x.r < 0.92 THEN 'pending'
            WHEN x.r < 0.97 THEN 'failed' ELSE 'refunded' END::fixia.payment_status,
       j.started_at + (%(anchor)s::timestamptz - j.started_at) * pg_temp.u(x.g, 83)
FROM (
    SELECT g, 1 + floor(pg_temp.u(g, 80) * (SELECT count(*) FROM fixia.jobs))::bigint AS job_id,
           pg_temp.u(g, 84) AS r
    FROM generate_series(1, 50000 * %(scale)s::bigint) AS g
) AS x
JOIN fixia.jobs AS j ON j.id = x.job_id
JOIN fixia.projects AS p ON p.id = j.project_id;

-- step: user_activity
INSERT INTO fixia.user_activity (id, user_id, action, entity_type, entity_id, ip_address, created_at)
SELECT g,
       1 + floor(pg_temp.u(g, 90) * (10000 * %(scale)s::bigint))::bigint,
       a.action, a.entity_type,
       CASE a.entity_type
            WHEN 'service' THEN 1 + floor(pg_temp.u(g, 92) * (20000 * %(scale)s::bigint))::bigint
            WHEN 'project' THEN 1 + floor(pg_temp.u(g, 92) * (15000 * %(scale)s::bigint))::bigint
       END,
       '192.0.2.0'::inet + mod(hashint8extended(g, 93) & 9223372036854775807, 256),
       pg_temp.ts(%(anchor)s, g, 94)
FROM generate_series(1, 500000 * %(scale)s::bigint) AS g
CROSS JOIN LATERAL (
    SELECT (ARRAY['login','view_service','view_project','search','send_message','update_profile'])
               [1 + floor(pg_temp.u(g, 91) * 6)::int] AS action
) AS pick
CROSS JOIN LATERAL (
    SELECT pick.action,
           CASE pick.action WHEN 'view_service' THEN 'service'
                            WHEN 'view_project' THEN 'project' END AS entity_type
) AS a;

-- step: notifications
INSERT INTO fixia.notifications (id, user_id, type, title, body, read_at, created_at)
SELECT g, n.user_id, n.type,
       CASE n.type
            WHEN 'mensaje' THEN 'Tenés un mensaje nuevo'
            WHEN 'pago' THEN 'Recibiste un pago'
            WHEN 'resena' THEN 'Te dejaron una reseña'
            WHEN 'proyecto' THEN 'Nuevo proyecto en tu categoría'
            ELSE 'Novedades de Fixia' END,
       pg_temp.pick(ARRAY['Ingresá a la aplicación para ver el detalle.',
                          'Respondé pronto para no perder la oportunidad.',
                          'Revisá tu bandeja de entrada.',
                          'Podés configurar tus avisos desde tu perfil.'], g, 101),
       CASE WHEN pg_temp.u(g, 102) < 0.7
            THEN least(n.created_at + pg_temp.u(g, 103) * interval '2 days',
                       %(anchor)s::timestamptz - interval '1 second') END,
       n.created_at
FROM generate_series(1, 1000000 * %(scale)s::bigint) AS g
CROSS JOIN LATERAL (
    SELECT 1 + floor(pg_temp.u(g, 104) * (10000 * %(scale)s::bigint))::bigint AS user_id,
           pg_temp.pick(ARRAY['mensaje','pago','resena','proyecto','sistema'], g, 105) AS type,
           pg_temp.ts(%(anchor)s, g, 106) AS created_at
) AS n;

-- step: sequences
SELECT pg_catalog.setval(pg_catalog.pg_get_serial_sequence('fixia.users', 'id'), (SELECT coalesce(max(id), 0) + 1 FROM fixia.users), false);
SELECT pg_catalog.setval(pg_catalog.pg_get_serial_sequence('fixia.professional_profiles', 'id'), (SELECT coalesce(max(id), 0) + 1 FROM fixia.professional_profiles), false);
SELECT pg_catalog.setval(pg_catalog.pg_get_serial_sequence('fixia.categories', 'id'), (SELECT coalesce(max(id), 0) + 1 FROM fixia.categories), false);
SELECT pg_catalog.setval(pg_catalog.pg_get_serial_sequence('fixia.services', 'id'), (SELECT coalesce(max(id), 0) + 1 FROM fixia.services), false);
SELECT pg_catalog.setval(pg_catalog.pg_get_serial_sequence('fixia.projects', 'id'), (SELECT coalesce(max(id), 0) + 1 FROM fixia.projects), false);
SELECT pg_catalog.setval(pg_catalog.pg_get_serial_sequence('fixia.jobs', 'id'), (SELECT coalesce(max(id), 0) + 1 FROM fixia.jobs), false);
SELECT pg_catalog.setval(pg_catalog.pg_get_serial_sequence('fixia.reviews', 'id'), (SELECT coalesce(max(id), 0) + 1 FROM fixia.reviews), false);
SELECT pg_catalog.setval(pg_catalog.pg_get_serial_sequence('fixia.payments', 'id'), (SELECT coalesce(max(id), 0) + 1 FROM fixia.payments), false);
SELECT pg_catalog.setval(pg_catalog.pg_get_serial_sequence('fixia.notifications', 'id'), (SELECT coalesce(max(id), 0) + 1 FROM fixia.notifications), false);
SELECT pg_catalog.setval(pg_catalog.pg_get_serial_sequence('fixia.user_activity', 'id'), (SELECT coalesce(max(id), 0) + 1 FROM fixia.user_activity), false);
