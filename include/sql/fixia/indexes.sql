-- Secondary indexes of the Fixia reference schema: every foreign key, plus the access
-- paths the marketplace uses (recent items per user, active services by category and
-- price, open projects). Idempotent; built after a bulk load.

CREATE INDEX IF NOT EXISTS users_user_type_idx ON fixia.users (user_type);
CREATE INDEX IF NOT EXISTS users_created_at_idx ON fixia.users (created_at);

CREATE INDEX IF NOT EXISTS categories_parent_id_idx ON fixia.categories (parent_id);

CREATE INDEX IF NOT EXISTS services_professional_id_idx ON fixia.services (professional_id);
CREATE INDEX IF NOT EXISTS services_category_active_price_idx
    ON fixia.services (category_id, price) WHERE active;
CREATE INDEX IF NOT EXISTS services_featured_views_idx
    ON fixia.services (view_count DESC) WHERE active AND featured;
CREATE INDEX IF NOT EXISTS services_tags_idx ON fixia.services USING gin (tags);

CREATE INDEX IF NOT EXISTS projects_client_id_idx ON fixia.projects (client_id);
CREATE INDEX IF NOT EXISTS projects_category_status_idx ON fixia.projects (category_id, status);
CREATE INDEX IF NOT EXISTS projects_open_created_idx ON fixia.projects (created_at DESC) WHERE status = 'open';

CREATE INDEX IF NOT EXISTS jobs_project_id_idx ON fixia.jobs (project_id);
CREATE INDEX IF NOT EXISTS jobs_professional_status_idx ON fixia.jobs (professional_id, status);

CREATE INDEX IF NOT EXISTS reviews_professional_created_idx ON fixia.reviews (professional_id, created_at DESC);
CREATE INDEX IF NOT EXISTS reviews_reviewer_id_idx ON fixia.reviews (reviewer_id);
CREATE INDEX IF NOT EXISTS reviews_service_id_idx ON fixia.reviews (service_id);
CREATE INDEX IF NOT EXISTS reviews_job_id_idx ON fixia.reviews (job_id);

CREATE INDEX IF NOT EXISTS payments_job_id_idx ON fixia.payments (job_id);
CREATE INDEX IF NOT EXISTS payments_payer_created_idx ON fixia.payments (payer_id, created_at DESC);
CREATE INDEX IF NOT EXISTS payments_payee_created_idx ON fixia.payments (payee_id, created_at DESC);
CREATE INDEX IF NOT EXISTS payments_created_at_idx ON fixia.payments (created_at);

CREATE INDEX IF NOT EXISTS notifications_user_created_idx ON fixia.notifications (user_id, created_at DESC);
CREATE INDEX IF NOT EXISTS notifications_unread_idx ON fixia.notifications (user_id) WHERE read_at IS NULL;

CREATE INDEX IF NOT EXISTS user_activity_user_created_idx ON fixia.user_activity (user_id, created_at DESC);
CREATE INDEX IF NOT EXISTS user_activity_created_at_idx ON fixia.user_activity USING brin (created_at);
